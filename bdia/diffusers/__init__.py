"""diffusers integration: adapters at the edge of the library (the core never imports this package).

Each adapter is a thin shell that calls bdia's core for every number it needs (grids, noise levels,
predictions, updates, the lattice, the warnings) and honours diffusers' own contracts:

* :func:`load_unet`, :func:`load_pipeline`: one loading path for hub ids and local folders, with an
  error that says when a model is not available offline;
* :class:`UNetEpsModel`, :class:`StableDiffusionEpsModel`: diffusers networks as ``model(z, t) -> eps``,
  with class labels or text prompts and classifier-free guidance;
* :class:`BDIAScheduler`, :class:`BDIAInverseScheduler`: BDIA-DDIM as a diffusers scheduler, for any
  standard pipeline, and its inversion for a custom loop;
* :class:`BDIAEditPipeline`: a Stable Diffusion pipeline that inverts real images and regenerates or
  edits them exactly;
* :func:`prepare_image`, :func:`encode_image`, :func:`decode_latents`: images in and out of the VAE's
  latent space;
* :func:`tiny_stable_diffusion`: a miniature, randomly initialised Stable Diffusion pipeline built in
  code, for tests and the ``ci`` profile.
"""

from .images import decode_latents, encode_image, pipeline_resolution, prepare_image
from .loading import ModelNotAvailableError, cast_network, cast_pipeline, load_pipeline, load_unet, network_copy
from .models import StableDiffusionEpsModel, UNetEpsModel, classifier_free_guidance, schedule_from_scheduler
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
    "classifier_free_guidance",
    "schedule_from_scheduler",
    "BDIAScheduler",
    "BDIAInverseScheduler",
    "BDIAEditPipeline",
    "encode_image",
    "decode_latents",
    "pipeline_resolution",
    "prepare_image",
    "tiny_stable_diffusion",
]
