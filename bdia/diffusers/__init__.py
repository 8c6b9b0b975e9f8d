"""diffusers integration: adapters at the edge of the library (the core never imports this package).

* :func:`load_unet`, :func:`load_pipeline`: one loading path for hub ids and local folders, with an
  error that says when a model is not available offline;
* :class:`UNetEpsModel`, :class:`StableDiffusionEpsModel`: diffusers networks as ``model(z, t) -> eps``,
  with class labels or text prompts and classifier-free guidance;
* :class:`BDIAScheduler`: BDIA-DDIM as a diffusers scheduler, for any standard pipeline;
* :class:`BDIAEditPipeline`: a Stable Diffusion pipeline that inverts real images and regenerates or
  edits them exactly; :func:`encode_image`, :func:`decode_latents`, :func:`invert_image`, :func:`edit_image`
  are the thin functional interface to it;
* :func:`tiny_stable_diffusion`: a miniature, randomly initialised Stable Diffusion pipeline built in
  code, for tests and the ``ci`` profile.
"""

from .editing import (EditResult, decode_latents, edit_image, encode_image, invert_image, pipeline_resolution,
                      prepare_image)
from .loading import ModelNotAvailableError, cast_network, cast_pipeline, load_pipeline, load_unet, network_copy
from .models import StableDiffusionEpsModel, UNetEpsModel, schedule_from_scheduler
from .pipeline import BDIAEditPipeline
from .scheduler import BDIAInverseScheduler, BDIAScheduler
from .tiny import tiny_stable_diffusion

__all__ = [
    "load_unet",
    "load_pipeline",
    "network_copy",
    "cast_network",
    "cast_pipeline",
    "ModelNotAvailableError",
    "UNetEpsModel",
    "StableDiffusionEpsModel",
    "schedule_from_scheduler",
    "BDIAScheduler",
    "BDIAInverseScheduler",
    "BDIAEditPipeline",
    "encode_image",
    "decode_latents",
    "invert_image",
    "edit_image",
    "EditResult",
    "pipeline_resolution",
    "prepare_image",
    "tiny_stable_diffusion",
]
