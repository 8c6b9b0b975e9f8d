"""diffusers integration: adapters at the edge of the library (the core never imports this package).

Each adapter is a thin shell that calls bdia's core for every number it needs (grids, noise levels,
predictions, updates, the lattice, the warnings) and honours diffusers' own contracts:

* :func:`load_unet`, :func:`load_pipeline`: one loading path for hub ids and local folders, with an
  error that says when a model is not available offline;
* :class:`UNetEpsModel`, :class:`StableDiffusionEpsModel`: diffusers networks as ``model(z, t) -> eps``,
  with class labels or text prompts and classifier-free guidance; :class:`UNetVelocityModel`, a UNet trained as a
  rectified flow, as ``model(z, t) -> v``;
* :class:`BDIAScheduler`, :class:`BDIAInverseScheduler`: BDIA-DDIM as a diffusers scheduler, for any
  standard pipeline, and its inversion for a custom loop;
* :class:`BDIAEditPipeline`: a Stable Diffusion pipeline that inverts real images and regenerates or
  edits them exactly;
* :class:`BDIAFlowMatchScheduler`, :class:`BDIAFlowMatchInverseScheduler`, :class:`BDIAFlowEditPipeline`: the
  same for rectified-flow pipelines (Stable Diffusion 3, FLUX), with :class:`SD3VelocityModel` and
  :class:`FluxVelocityModel`;
* :class:`FeatureInjection`, :class:`PromptToPrompt` (:mod:`bdia.diffusers.controls`): an edit's target branch
  takes the source branch's features or attention maps, through hooks and the attention-processor API;
* :func:`prepare_image`, :func:`encode_image`, :func:`decode_latents`: images in and out of the VAE's
  latent space;
* :func:`tiny_stable_diffusion`, :func:`tiny_stable_diffusion_3`, :func:`tiny_flux`: miniature, randomly
  initialised pipelines built in code, for tests and the ``ci`` profile.
"""

from .controls import FeatureInjection, PromptToPrompt
from .flow_models import FluxVelocityModel, SD3VelocityModel
from .flow_pipeline import BDIAFlowEditPipeline
from .flow_scheduler import BDIAFlowMatchInverseScheduler, BDIAFlowMatchScheduler
from .images import decode_latents, encode_image, pipeline_resolution, prepare_image
from .loading import (ModelNotAvailableError, cast_network, cast_pipeline, load_pipeline, load_scheduler_config,
                      load_unet, network_copy)
from .models import (StableDiffusionEpsModel, StableDiffusionXLEpsModel, UNetEpsModel, UNetVelocityModel,
                     classifier_free_guidance, guidance_of, schedule_from_scheduler)
from .pipeline import BDIAEditPipeline, BDIAEditXLPipeline
from .scheduler import BDIAInverseScheduler, BDIAScheduler
from .tiny import tiny_clip, tiny_flux, tiny_stable_diffusion, tiny_stable_diffusion_3, tiny_stable_diffusion_xl

__all__ = [
    "load_unet",
    "load_pipeline",
    "load_scheduler_config",
    "network_copy",
    "cast_network",
    "cast_pipeline",
    "ModelNotAvailableError",
    "UNetEpsModel",
    "UNetVelocityModel",
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
    "BDIAFlowMatchScheduler",
    "BDIAFlowMatchInverseScheduler",
    "BDIAFlowEditPipeline",
    "SD3VelocityModel",
    "FluxVelocityModel",
    "tiny_stable_diffusion_3",
    "tiny_flux",
    "tiny_clip",
    "BDIAEditXLPipeline",
    "StableDiffusionXLEpsModel",
    "tiny_stable_diffusion_xl",
    "FeatureInjection",
    "PromptToPrompt",
    "guidance_of",
]
