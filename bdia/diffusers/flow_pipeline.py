"""``BDIAFlowEditPipeline``: invert a real image with Stable Diffusion 3 or FLUX and regenerate or edit it, exactly::

    from diffusers import FluxPipeline
    from bdia.diffusers import BDIAFlowEditPipeline

    pipe = BDIAFlowEditPipeline.from_pipe(FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev"))
    state = pipe.invert("cat.png", "a photo of a cat", num_inference_steps=28, strength=0.8)
    same = pipe(inversion=state).images[0]                        # the input, to rounding
    tiger = pipe("a photo of a tiger", inversion=state).images[0]  # the edit

It wraps the pipeline it is made from (its components are shared, not copied) and calls :func:`bdia.invert`
and :func:`bdia.sample` directly with the family's velocity model (:mod:`bdia.diffusers.flow_models`) on the
core's :class:`~bdia.FlowMatchSchedule` of the pipeline's scheduler config: SD3's static shift, or FLUX's
``linspace(1, 1/N, N)`` sigmas with the resolution-dependent ``mu``, as the stock pipelines set them. Any
DDIM-family method runs (``bdia`` at any gamma, the lattice, ``obelm``, ``edict``, ``ddim`` = Euler, and the
approximate ``midpoint`` (RF-Solver) and ``fireflow``). The latents stay in their own dtype (float64 by default
for inversion) and the transformer in its own. ``image`` may be a path, PIL image, array, tensor or its VAE
latent ``(B, C, H, W)``, shifted and scaled, as ``output_type="latent"`` returns it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import InvalidTypeError, InvalidValueError
from ..flow import FlowMatchSchedule, calculate_shift
from ..methods import get_method
from ..models import CountingModel
from ..samplers import InversionState, invert, inverted_steps, sample
from .edit_tools import (check_edit, check_inversion, expand_prompts, fingerprint, initial_noise, latent_of,
                         step_callback)
from .flow_models import FluxVelocityModel, SD3VelocityModel
from .images import decode_latents, pipeline_resolution

__all__ = ["BDIAFlowEditPipeline"]


def _family(pipe) -> str:
    names = [cls.__name__ for cls in type(pipe).__mro__]
    if any(name.startswith("StableDiffusion3") for name in names):
        return "sd3"
    if any(name.startswith("Flux") for name in names):
        return "flux"
    raise InvalidTypeError(f"BDIAFlowEditPipeline takes a StableDiffusion3Pipeline or a FluxPipeline, got "
                           f"{type(pipe).__name__} (BDIAEditPipeline takes Stable Diffusion 1.x / 2.x)")


class BDIAFlowEditPipeline:
    """Exact inversion and editing with a Stable Diffusion 3 or FLUX pipeline; see the module docstring."""

    num_network_calls: int = 0  #: network calls of the last :meth:`invert` or ``__call__``

    def __init__(self, pipe):
        self.family = _family(pipe)
        self.pipe = pipe

    @classmethod
    def from_pipe(cls, pipe) -> "BDIAFlowEditPipeline":
        """The editing pipeline on the components of ``pipe`` (a ``StableDiffusion3Pipeline`` or ``FluxPipeline``)."""
        return cls(pipe)

    def __getattr__(self, name):  # the wrapped pipeline's components and helpers (vae, transformer, progress_bar...)
        if name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

    # -- the family's pieces ------------------------------------------------------------------------------
    def schedule(self, latent_shape) -> FlowMatchSchedule:
        """The core schedule the stock pipeline sets for latents of ``latent_shape`` ``(B, C, H, W)``."""
        config = self.pipe.scheduler.config
        height, width = latent_shape[-2:]
        if self.family == "flux":
            mu = calculate_shift((height // 2) * (width // 2), config.get("base_image_seq_len", 256),
                                 config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                 config.get("max_shift", 1.15))
            return FlowMatchSchedule.from_diffusers_config(config, mu=mu,
                                                           base_sigmas=lambda n: np.linspace(1.0, 1 / n, n))
        mu = None
        if config.get("use_dynamic_shifting"):
            patch = self.pipe.transformer.config.patch_size
            mu = calculate_shift((height // patch) * (width // patch), config.get("base_image_seq_len", 256),
                                 config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                 config.get("max_shift", 1.15))
        return FlowMatchSchedule.from_diffusers_config(config, mu=mu)

    def velocity_model(self, prompt, guidance_scale: float, negative_prompt: str, batch: int,
                       max_sequence_length: int | None = None):
        """The family's velocity model for ``prompt`` (see :mod:`bdia.diffusers.flow_models`)."""
        if self.family == "flux":
            return FluxVelocityModel(self.pipe, prompt, guidance_scale, batch, max_sequence_length or 512)
        return SD3VelocityModel(self.pipe, prompt, guidance_scale, negative_prompt, batch, max_sequence_length or 256)

    def _default_guidance(self, inverting: bool) -> float:
        # FLUX.1-dev's guidance is an input of the distilled model (its pipeline's default 3.5), not CFG
        return 3.5 if self.family == "flux" else (1.0 if inverting else 7.0)

    def decode(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents to images through the VAE and the image processor (``"pil"``, ``"np"`` or ``"pt"``)."""
        return decode_latents(self.pipe, latents, output_type)

    def _output(self, images, return_dict: bool):
        if not return_dict:
            return (images,)
        if self.family == "flux":
            from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

            return FluxPipelineOutput(images=images)
        from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput

        return StableDiffusion3PipelineOutput(images=images)

    # -- inversion and regeneration -----------------------------------------------------------------------
    @torch.no_grad()
    def invert(self, image, prompt: str | list[str] = "", num_inference_steps: int = 28, strength: float = 1.0,
               guidance_scale: float | None = None, negative_prompt: str = "", method: str = "bdia",
               latent_dtype: torch.dtype = torch.float64, height: int | None = None, width: int | None = None,
               max_sequence_length: int | None = None, **method_options) -> InversionState:
        """Invert ``image`` under ``prompt`` for ``int(strength * num_inference_steps)`` steps: the
        :class:`~bdia.InversionState` to pass as ``inversion=``. ``method_options``: ``gamma``, ``lattice`` (bdia),
        ``p``, ``leapfrog`` (edict)."""
        guidance_scale = self._default_guidance(True) if guidance_scale is None else float(guidance_scale)
        latent = latent_of(self.pipe, image, height, width, latent_dtype)
        schedule = self.schedule(latent.shape)
        model = CountingModel(self.velocity_model(prompt, guidance_scale, negative_prompt, latent.shape[0],
                                                  max_sequence_length))
        bar, callback = step_callback(self.pipe, inverted_steps(strength, num_inference_steps))
        with bar:
            state = invert(model, latent, schedule, num_inference_steps, method, strength=strength, callback=callback,
                           **method_options)
        self.num_network_calls = model.calls
        conditioning = {"guidance_scale": guidance_scale, "prompt_fingerprint": fingerprint(*model.model.embeddings),
                        "prompt": prompt, "negative_prompt": negative_prompt, "latent_dtype": str(latent_dtype),
                        "max_sequence_length": max_sequence_length}
        return dataclasses.replace(state, conditioning=conditioning)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, inversion: InversionState | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 negative_prompt: str | None = None, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, height: int | None = None, width: int | None = None,
                 output_type: str = "pil", return_dict: bool = True, method: str | None = None,
                 latent_dtype: torch.dtype | None = None, max_sequence_length: int | None = None, control=None,
                 **method_options):
        """Regenerate or edit an inversion (``inversion=state``; ``prompt`` and the guidance default to the
        inversion's), or sample from noise (``generator`` or ``latents``) with ``method`` (default ``bdia``).

        ``control`` (:class:`~bdia.diffusers.controls.FeatureInjection`: the joint attention's values) edits with a
        source branch beside the target in one batch, the source regenerated under the inversion's prompt and
        guidance; FlowEdit (``method="flowedit"``) always edits so. The images returned are the edits;
        ``num_network_calls`` counts both branches (2 per step)."""
        if inversion is not None:
            init = check_inversion(inversion, method, num_inference_steps, latent_dtype, latents=latents)
            cond = inversion.conditioning
            prompt = cond.get("prompt", "") if prompt is None else prompt
            negative_prompt = cond.get("negative_prompt", "") if negative_prompt is None else negative_prompt
            guidance_scale = cond.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale
            max_sequence_length = max_sequence_length or cond.get("max_sequence_length")
            num_inference_steps, method = inversion.num_steps, inversion.method
            total = get_method(method).reconstruction_steps(inversion.num_inverted_steps)
        else:
            method, num_inference_steps = method or "bdia", num_inference_steps or 28
            guidance_scale = self._default_guidance(False) if guidance_scale is None else guidance_scale
            prompts = [prompt or ""] if not isinstance(prompt, list) else prompt
            side = (height or width or pipeline_resolution(self.pipe)) // self.pipe.vae_scale_factor
            shape = (len(prompts), self.pipe.vae.config.latent_channels, side, side)
            init = initial_noise(shape, latents, generator, self.pipe.device, latent_dtype or torch.float32)
            prompt, total = prompts, num_inference_steps
        batch, branches = init.shape[0], 1
        if control is not None and inversion is None:
            raise InvalidValueError("a control edits an inversion beside its source: pass inversion=state")
        prompts, guidance = prompt, guidance_scale
        if control is not None or (inversion is not None and get_method(method).edits_beside_source):
            # the source branch first, under the inversion's prompt and guidance; the edit after it
            cond = inversion.conditioning
            source = expand_prompts(cond.get("prompt", ""), batch)
            prompts = source + expand_prompts(prompt, batch)
            guidance = [cond.get("guidance_scale", guidance_scale)] * batch + [guidance_scale] * batch
            branches = 2
        model = CountingModel(self.velocity_model(prompts, guidance, negative_prompt or "", branches * batch,
                                                  max_sequence_length))
        if inversion is not None:  # the edit's own conditioning: the target half of a two-branch batch
            target = [emb if emb is None or emb.shape[0] != branches * batch else emb[-batch:]
                      for emb in model.model.embeddings]
            check_edit(inversion, fingerprint(*target), guidance_scale, prompt, control)
        if control is not None:
            control = control.with_prompts(self.pipe.tokenizer, source, expand_prompts(prompt, batch))
        elif branches == 2:  # FlowEdit edits beside its source branch without a control: tile it here
            init = init.tile(2)
        schedule = self.schedule(init.shape)
        bar, callback = step_callback(self.pipe, total)
        with bar:
            result = sample(model, init, schedule, num_inference_steps, method, callback=callback, control=control,
                            **method_options)
        result = result[-batch:]  # with two branches: the edits, after the source branch
        self.num_network_calls = model.calls * branches
        images = result if output_type == "latent" else self.decode(result, output_type)
        self.pipe.maybe_free_model_hooks()
        return self._output(images, return_dict)
