"""``BDIAEditPipeline``: invert a real image with Stable Diffusion and regenerate or edit it, exactly::

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from ..errors import InvalidTypeError, InvalidValueError
from ..exactness import ExactnessWarning
from ..methods import get_method
from ..models import CountingModel
from ..samplers import InversionState, invert, inverted_steps, sample
from .images import decode_latents, encode_image
from .loading import cast_pipeline
from .models import StableDiffusionEpsModel, schedule_from_scheduler

__all__ = ["BDIAEditPipeline", "EDIT_NOISE_RATIO_WARN"]

#: an edit that starts from a latent whose rms is this many times the noise level of its timestep warns
EDIT_NOISE_RATIO_WARN = 3.0


def _fingerprint(model: StableDiffusionEpsModel) -> str:
    digest = hashlib.sha256()
    for emb in (model.cond, model.uncond):
        if emb is not None:
            digest.update(emb.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class BDIAEditPipeline(StableDiffusionPipeline):
    """Stable Diffusion with exact inversion: :meth:`invert` and ``__call__(prompt, inversion=state)``; see the module."""

    num_network_calls: int = 0  #: network calls of the last :meth:`invert` or ``__call__``

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """This pipeline on the components of another Stable Diffusion pipeline (shared, not copied), which keep their
        dtype and device; ``dtype=`` casts them (diffusers' own ``from_pipe`` casts them to float32 unless told
        otherwise, which would turn a float16 GPU pipeline into a float32 one in place). Other keyword arguments
        replace components."""
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        components = {name: kwargs.pop(name, module) for name, module in pipeline.components.items()}
        if kwargs:
            raise InvalidTypeError(f"unknown argument(s) {', '.join(sorted(kwargs))} for from_pipe; allowed: dtype and "
                                   f"the components {', '.join(sorted(components))}")
        new = cls(**components, requires_safety_checker=bool(pipeline.config.get("requires_safety_checker", False)))
        new.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        return new if dtype is None else cast_pipeline(new, dtype)

    def _prompts(self, prompt, batch: int) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) == 1:
            prompts = prompts * batch
        if len(prompts) != batch:
            raise InvalidValueError(f"{len(prompts)} prompts for a batch of {batch} images")
        return prompts

    def _latent_of(self, image, height, width, dtype) -> torch.Tensor:
        """The VAE latent of ``image``; a tensor with the VAE's latent channels is taken as that latent already
        (as diffusers' img2img pipelines take one), so a caller that encoded the image does not pay twice."""
        if torch.is_tensor(image) and image.dim() == 4 and image.shape[1] == self.vae.config.latent_channels:
            return image.to(dtype)
        side = height or width
        if height and width and height != width:
            raise InvalidValueError("BDIAEditPipeline edits square images: give height == width (or one of them)")
        return encode_image(self, image, dtype=dtype, size=side)

    def _run(self, total: int, callback_on_step_end, tensor_inputs):
        """A core-sampler callback that drives the progress bar and the pipeline's ``callback_on_step_end``."""
        bar = self.progress_bar(total=total)

        def callback(step, t, state):
            bar.update(1)
            if callback_on_step_end is not None:
                kwargs = {name: state for name in tensor_inputs if name == "latents"}
                out = callback_on_step_end(self, step, t, kwargs) or {}
                if "latents" in out and out["latents"] is not state and not torch.equal(out["latents"], state):
                    raise InvalidValueError("callback_on_step_end may read the latents, not change them: bdia's samplers "
                                            "carry the previous state too, and a changed latent breaks exactness")

        return bar, callback

    @torch.no_grad()
    def invert(self, image, prompt: str | list[str] = "", num_inference_steps: int = 50, strength: float = 1.0,
               guidance_scale: float = 1.0, negative_prompt: str = "", method: str = "bdia",
               latent_dtype: torch.dtype = torch.float64, height: int | None = None, width: int | None = None,
               allow_v_prediction: bool = False, **method_options) -> InversionState:
        """Invert ``image`` (path, PIL, array, image tensor, or its VAE latent) under ``prompt``: the
        :class:`~bdia.InversionState` to pass as ``inversion=``. ``method_options``: ``gamma``, ``lattice`` (bdia),
        ``p``, ``leapfrog`` (edict)."""
        schedule = schedule_from_scheduler(self.scheduler)
        latent = self._latent_of(image, height, width, latent_dtype)
        model = CountingModel(StableDiffusionEpsModel(self, self._prompts(prompt, latent.shape[0]), guidance_scale,
                                                      negative_prompt, allow_v_prediction, schedule))
        bar, callback = self._run(inverted_steps(strength, num_inference_steps), None, ())
        with bar:
            state = invert(model, latent, schedule, num_inference_steps, method, strength=strength, callback=callback,
                           **method_options)
        self.num_network_calls = model.calls
        conditioning = {"guidance_scale": float(guidance_scale), "prompt_fingerprint": _fingerprint(model.model),
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
                 allow_v_prediction: bool = False, **method_options):
        """Regenerate or edit an inversion (``inversion=state``; ``prompt`` defaults to the inversion's), or sample
        from noise (``generator`` or ``latents``) with ``method`` (default ``bdia``)."""
        if inversion is not None:
            init, batch = self._from_inversion(inversion, prompt, num_inference_steps, guidance_scale, method,
                                               latent_dtype, num_images_per_prompt, latents)
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
            init = self._initial_latents(batch, latents, generator, latent_dtype or torch.float32, height, width)
            total = num_inference_steps
        schedule = schedule_from_scheduler(self.scheduler)
        model = CountingModel(StableDiffusionEpsModel(self, self._prompts(prompt, batch), guidance_scale,
                                                      negative_prompt or "", allow_v_prediction, schedule))
        if inversion is not None:
            self._warn_on_mismatch(inversion, model.model, guidance_scale)
        bar, callback = self._run(total, callback_on_step_end, callback_on_step_end_tensor_inputs)
        with bar:
            result = sample(model, init, schedule, num_inference_steps, method, callback=callback, **method_options)
        self.num_network_calls = model.calls
        images = result if output_type == "latent" else self.decode(result, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, None)
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)

    def decode(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents to images through the VAE and the image processor (``"pil"``, ``"np"`` or ``"pt"``)."""
        return decode_latents(self, latents, output_type)

    def _from_inversion(self, state, prompt, num_inference_steps, guidance_scale, method, latent_dtype,
                        num_images_per_prompt, latents):
        if not isinstance(state, InversionState):
            raise InvalidTypeError(f"inversion must be the InversionState that invert() returned, got "
                                   f"{type(state).__name__}")
        if method is not None and method != state.method:
            raise InvalidValueError(f"method mismatch: the inversion was made by {state.method!r}, not {method!r}")
        if num_inference_steps is not None and num_inference_steps != state.num_steps:
            raise InvalidValueError(f"step count mismatch: the inversion used num_inference_steps={state.num_steps}")
        if num_images_per_prompt != 1 or latents is not None:
            raise InvalidValueError("an inversion regenerates its own latents: leave num_images_per_prompt at 1 and "
                                    "latents unset")
        if latent_dtype is not None and latent_dtype != state.dtype:
            warnings.warn(f"regenerating a {state.dtype} inversion with {latent_dtype} latents: the round trip will not "
                          "be exact beyond the lower of the two precisions", ExactnessWarning, stacklevel=3)
            state = state.to(latent_dtype)
        return state, state.shape[0]

    def _warn_on_mismatch(self, state: InversionState, model: StableDiffusionEpsModel, guidance_scale: float) -> None:
        inverted = state.conditioning
        if "guidance_scale" in inverted and float(guidance_scale) != inverted["guidance_scale"]:
            warnings.warn(f"the inversion was made at guidance {inverted['guidance_scale']:g}, this regeneration uses "
                          f"{float(guidance_scale):g}: the round trip will not be exact (pass the same guidance_scale)",
                          ExactnessWarning, stacklevel=3)
        edit = inverted.get("prompt_fingerprint") not in (None, _fingerprint(model))
        ratio = state.noise_stats.get("ratio", 1.0)
        if edit and ratio > EDIT_NOISE_RATIO_WARN:
            warnings.warn(f"this edit starts from an inverted latent {ratio:.3g} times the noise level of its timestep "
                          "(not noise-like); edits from it can go astray: use gamma = 1, fewer steps or a lower strength",
                          ExactnessWarning, stacklevel=3)

    def _initial_latents(self, batch, latents, generator, dtype, height, width):
        side = (height or width or self.unet.config.sample_size * self.vae_scale_factor) // self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, side, side)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InvalidValueError(f"latents of shape {tuple(latents.shape)}, expected {shape}")
            return latents.to(self._execution_device, dtype)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32,
                            device=generator.device if generator is not None else "cpu")
        return noise.to(self._execution_device, dtype) * self.scheduler.init_noise_sigma
