"""``BDIAEditPipeline``: invert a real image with Stable Diffusion (1.x, 2.x, XL) and regenerate or edit it, exactly::

    from diffusers import StableDiffusionPipeline
    from bdia.diffusers import BDIAEditPipeline

    pipe = BDIAEditPipeline.from_pipe(StableDiffusionPipeline.from_pretrained(model_id))
    state = pipe.invert("cat.png", "a photo of a cat", num_inference_steps=50, strength=0.8, guidance_scale=3.0)
    same = pipe(inversion=state).images[0]                     # the input, to rounding
    tiger = pipe("a photo of a tiger", inversion=state).images[0]  # the edit

It is a ``StableDiffusionPipeline`` (``from_pretrained``, ``from_pipe``, ``encode_prompt``, the image
processor, ``output_type``, ``negative_prompt``, ``num_images_per_prompt``, ``generator``,
``callback_on_step_end``, the progress bar and the standard output class come from there) whose inversion
and sampling call :func:`bdia.invert` and :func:`bdia.sample` (``bdia``, ``edict``, ``obelm``, ``ddim``)
directly, on the noise schedule of the pipeline's scheduler config, with its clipping or thresholding of
``x0`` if it has one. ``strength`` inverts ``int(strength * num_inference_steps)`` steps, as diffusers'
img2img pipelines do. The latents stay in their own dtype (float64 by default for inversion) and
the UNet in its own (e.g. float16 on a GPU): each network call casts at the boundary, which a standard
pipeline cannot do. The inversion state records the guidance scale, the prompt embeddings' fingerprint
and the latent dtype; regenerating with another guidance scale or latent dtype warns that the round trip
will not be exact (another prompt is an edit, which is the point).

``BDIAEditPipeline.from_pipe`` of a ``StableDiffusionXLPipeline`` gives a :class:`BDIAEditXLPipeline`, the same
on SDXL's two text encoders, pooled embeddings and ``add_time_ids``; SDXL's VAE, which overflows in float16,
runs in float32 for encoding and decoding.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput

from ..errors import InvalidTypeError, InvalidValueError
from ..methods import get_method
from ..models import CountingModel
from ..samplers import InversionState, invert, inverted_steps, sample
from .edit_tools import (check_edit, check_inversion, expand_prompts, fingerprint, initial_noise, latent_of,
                         step_callback)
from .images import decode_latents, pipeline_resolution
from .loading import cast_pipeline
from .models import StableDiffusionEpsModel, StableDiffusionXLEpsModel, guidance_of, schedule_from_scheduler

__all__ = ["BDIAEditPipeline", "BDIAEditXLPipeline"]


class _ExactEditing:
    """Inversion and regeneration through bdia's samplers, for a diffusers pipeline class it is mixed into; the
    subclass says which eps model wraps its UNet and prompts (:meth:`_eps_model`) and which output class it returns."""

    num_network_calls: int = 0  #: network calls of the last :meth:`invert` or ``__call__``

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """This pipeline on the components of another pipeline of its family (shared, not copied), which keep their
        dtype and device; ``dtype=`` casts them (diffusers' own ``from_pipe`` casts them to float32 unless told
        otherwise, which would turn a float16 GPU pipeline into a float32 one in place). Other keyword arguments
        replace components. A ``StableDiffusionXLPipeline`` gives a :class:`BDIAEditXLPipeline`."""
        if cls is BDIAEditPipeline and isinstance(pipeline, StableDiffusionXLPipeline):
            return BDIAEditXLPipeline.from_pipe(pipeline, **kwargs)
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        components = {name: kwargs.pop(name, module) for name, module in pipeline.components.items()}
        if kwargs:
            raise InvalidTypeError(f"unknown argument(s) {', '.join(sorted(kwargs))} for from_pipe; allowed: dtype and "
                                   f"the components {', '.join(sorted(components))}")
        new = cls(**components, **cls._init_flags(pipeline))
        new.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        return new if dtype is None else cast_pipeline(new, dtype)

    @classmethod
    def _init_flags(cls, pipeline) -> dict:
        return {"requires_safety_checker": bool(pipeline.config.get("requires_safety_checker", False))}

    def _eps_model(self, prompts, guidance_scale, negative_prompt, allow_v_prediction, schedule, side):
        return StableDiffusionEpsModel(self, prompts, guidance_scale, negative_prompt, allow_v_prediction, schedule)

    @torch.no_grad()
    def invert(self, image, prompt: str | list[str] = "", num_inference_steps: int = 50, strength: float = 1.0,
               guidance_scale: float = 1.0, negative_prompt: str = "", method: str = "bdia",
               latent_dtype: torch.dtype = torch.float64, height: int | None = None, width: int | None = None,
               allow_v_prediction: bool = False, **method_options) -> InversionState:
        """Invert ``image`` (path, PIL, array, image tensor, or its VAE latent) under ``prompt``: the
        :class:`~bdia.InversionState` to pass as ``inversion=``. ``method_options``: ``gamma``, ``lattice`` (bdia),
        ``p``, ``leapfrog`` (edict), ``inner_steps``, ``lr``, ``early_stop`` (null-text)."""
        schedule = schedule_from_scheduler(self.scheduler)
        latent = latent_of(self, image, height, width, latent_dtype)
        side = latent.shape[-1] * self.vae_scale_factor
        model = CountingModel(self._eps_model(expand_prompts(prompt, latent.shape[0]), guidance_scale, negative_prompt,
                                              allow_v_prediction, schedule, side))
        bar, callback = step_callback(self, inverted_steps(strength, num_inference_steps))
        with bar:
            state = invert(model, latent, schedule, num_inference_steps, method, strength=strength, callback=callback,
                           **method_options)
        self.num_network_calls = model.calls
        conditioning = {"guidance_scale": float(guidance_scale), "prompt_fingerprint": fingerprint(*model.embeddings),
                        "prompt": prompt, "negative_prompt": negative_prompt, "latent_dtype": str(latent_dtype)}
        return dataclasses.replace(state, conditioning=conditioning)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, inversion: InversionState | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 negative_prompt: str | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs=("latents",), method: str | None = None,
                 latent_dtype: torch.dtype | None = None, height: int | None = None, width: int | None = None,
                 allow_v_prediction: bool = False, control=None, **method_options):
        """Regenerate or edit an inversion (``inversion=state``; ``prompt`` defaults to the inversion's), or sample
        from noise (``generator`` or ``latents``) with ``method`` (default ``bdia``).

        ``control`` (:class:`~bdia.diffusers.controls.PromptToPrompt` or ``FeatureInjection``) edits with a source
        branch beside the target in one batch: the source branch regenerates the inversion under its own prompt and
        guidance (the inversion's), the edit takes its attention maps or features. The images returned are the
        edits; ``num_network_calls`` counts both branches (2 per step)."""
        if inversion is not None:
            init = check_inversion(inversion, method, num_inference_steps, latent_dtype, num_images_per_prompt, latents)
            batch = init.shape[0]
            prompt = inversion.conditioning.get("prompt", "") if prompt is None else prompt
            negative_prompt = inversion.conditioning.get("negative_prompt", "") if negative_prompt is None else \
                negative_prompt
            guidance_scale = inversion.conditioning.get("guidance_scale", 1.0) if guidance_scale is None else \
                guidance_scale
            num_inference_steps, method = inversion.num_steps, inversion.method
            total = get_method(method).reconstruction_steps(inversion.num_inverted_steps)
        else:
            method, num_inference_steps = method or "bdia", num_inference_steps or 50
            guidance_scale = 7.5 if guidance_scale is None else guidance_scale
            prompts = [prompt or ""] if not isinstance(prompt, list) else prompt
            batch = len(prompts) * num_images_per_prompt
            prompt = [p for p in prompts for _ in range(num_images_per_prompt)]
            side = (height or width or pipeline_resolution(self)) // self.vae_scale_factor
            init = initial_noise((batch, self.unet.config.in_channels, side, side), latents, generator,
                                 self.device, latent_dtype or torch.float32) * self.scheduler.init_noise_sigma
            total = num_inference_steps
        schedule = schedule_from_scheduler(self.scheduler)
        prompts, guidance, branches = expand_prompts(prompt, batch), guidance_scale, 1
        if control is not None:
            if inversion is None:
                raise InvalidValueError("a control edits an inversion beside its source: pass inversion=state")
            source = expand_prompts(inversion.conditioning.get("prompt", ""), batch)
            control = control.with_prompts(self.tokenizer, source, prompts)
            prompts, branches = source + prompts, 2
            guidance = guidance_of([inversion.conditioning.get("guidance_scale", 1.0)] * batch +
                                   [guidance_scale] * batch)
        model = CountingModel(self._eps_model(prompts, guidance, negative_prompt or "", allow_v_prediction, schedule,
                                              init.shape[-1] * self.vae_scale_factor))
        if inversion is not None:
            target = [emb if emb is None or emb.shape[0] != branches * batch else emb[-batch:]
                      for emb in model.embeddings]
            check_edit(inversion, fingerprint(*target), guidance_scale, prompt, control)
        bar, callback = step_callback(self, total, callback_on_step_end, callback_on_step_end_tensor_inputs)
        with bar:
            result = sample(model, init, schedule, num_inference_steps, method, callback=callback, control=control,
                            **method_options)
        result = result[-batch:]  # with a control: the edits, after the source branch
        self.num_network_calls = model.calls * branches
        images = result if output_type == "latent" else self.decode(result, output_type)
        self.maybe_free_model_hooks()
        return self._output(images, return_dict)

    def _output(self, images, return_dict: bool):
        if not return_dict:
            return (images, None)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)

    def decode(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents to images through the VAE and the image processor (``"pil"``, ``"np"`` or ``"pt"``)."""
        return decode_latents(self, latents, output_type)


class BDIAEditPipeline(_ExactEditing, StableDiffusionPipeline):
    """Stable Diffusion with exact inversion: :meth:`invert` and ``__call__(prompt, inversion=state)``; see the module."""


class BDIAEditXLPipeline(_ExactEditing, StableDiffusionXLPipeline):
    """Stable Diffusion XL with exact inversion, as :class:`BDIAEditPipeline` (``BDIAEditPipeline.from_pipe`` of an
    SDXL pipeline gives one): two text encoders, pooled embeddings and SDXL's size conditioning."""

    @classmethod
    def _init_flags(cls, pipeline) -> dict:
        return {"force_zeros_for_empty_prompt": bool(pipeline.config.get("force_zeros_for_empty_prompt", True))}

    def _eps_model(self, prompts, guidance_scale, negative_prompt, allow_v_prediction, schedule, side):
        return StableDiffusionXLEpsModel(self, prompts, guidance_scale, negative_prompt, allow_v_prediction,
                                         schedule, size=side)

    def _output(self, images, return_dict: bool):
        return (images,) if not return_dict else StableDiffusionXLPipelineOutput(images=images)
