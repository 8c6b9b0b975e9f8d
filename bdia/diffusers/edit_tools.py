"""What the editing pipelines share (:class:`~bdia.diffusers.BDIAEditPipeline` for Stable Diffusion,
:class:`~bdia.diffusers.BDIAFlowEditPipeline` for SD3 and FLUX): prompts per image, the progress bar and
``callback_on_step_end`` as a core-sampler callback, the image's latent, the checks on an inversion state
and the warnings when a regeneration cannot be exact."""

from __future__ import annotations

import hashlib
import warnings

import torch

from ..errors import InvalidTypeError, InvalidValueError
from ..exactness import ExactnessWarning
from ..methods import get_method
from ..samplers import InversionState
from .images import encode_image

__all__ = ["EDIT_NOISE_RATIO_WARN", "expand_prompts", "step_callback", "latent_of", "fingerprint",
           "check_inversion", "check_edit", "initial_noise"]

#: an edit that starts from a latent whose rms is this many times the noise level of its timestep warns
EDIT_NOISE_RATIO_WARN = 3.0


def expand_prompts(prompt, batch: int) -> list[str]:
    """One prompt per image: a single prompt repeated, or a list of ``batch`` prompts."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if len(prompts) == 1:
        prompts = prompts * batch
    if len(prompts) != batch:
        raise InvalidValueError(f"{len(prompts)} prompts for a batch of {batch} images")
    return prompts


def step_callback(pipe, total: int, callback_on_step_end=None, tensor_inputs=()):
    """``(bar, callback)``: a core-sampler callback that drives the pipeline's progress bar and its
    ``callback_on_step_end``, which may read the latents but not change them."""
    bar = pipe.progress_bar(total=total)

    def callback(step, t, state):
        bar.update(1)
        if callback_on_step_end is not None:
            kwargs = {name: state for name in tensor_inputs if name == "latents"}
            out = callback_on_step_end(pipe, step, t, kwargs) or {}
            if "latents" in out and out["latents"] is not state and not torch.equal(out["latents"], state):
                raise InvalidValueError("callback_on_step_end may read the latents, not change them: bdia's samplers "
                                        "carry the previous state too, and a changed latent breaks exactness")

    return bar, callback


def latent_of(pipe, image, height, width, dtype) -> torch.Tensor:
    """The VAE latent of ``image``; a tensor with the VAE's latent channels is taken as that latent already (as
    diffusers' img2img pipelines take one), so a caller that encoded the image does not pay twice."""
    if torch.is_tensor(image) and image.dim() == 4 and image.shape[1] == pipe.vae.config.latent_channels:
        return image.to(dtype)
    if height and width and height != width:
        raise InvalidValueError("the editing pipelines edit square images: give height == width (or one of them)")
    return encode_image(pipe, image, dtype=dtype, size=height or width)


def fingerprint(*embeddings) -> str:
    """A short digest of prompt embeddings (``None`` entries skipped): which condition an inversion was made under."""
    digest = hashlib.sha256()
    for emb in embeddings:
        if emb is not None:
            digest.update(emb.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_inversion(state, method, num_inference_steps, latent_dtype, num_images_per_prompt=1, latents=None):
    """``state`` checked against a regeneration's arguments (cast to ``latent_dtype`` with a warning)."""
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
                      "be exact beyond the lower of the two precisions", ExactnessWarning, stacklevel=4)
        state = state.to(latent_dtype)
    return state


def check_edit(state: InversionState, prompt_fingerprint: str, guidance_scale: float, prompt=None,
               control=None) -> None:
    """Check a regeneration from ``state`` before it runs. Warn when a regeneration (the inversion's prompt) uses another guidance than its inversion, and when an edit
    (another prompt) starts from a latent far from noise. An edit may take a guidance of its own: the source's is the
    inversion's, the target's the edit's (as the EDICT reference code and null-text's recipe allow). An edit without
    a ``control`` by a method that edits only beside its source branch (Direct Inversion) is an error."""
    inverted = state.conditioning
    edit = inverted.get("prompt_fingerprint") not in (None, prompt_fingerprint)
    # the fingerprint also covers the unconditional embedding, which guidance 1 leaves out: a regeneration is the
    # inversion's prompt, whatever the guidance
    same_prompt = prompt is not None and "prompt" in inverted and prompt == inverted["prompt"]
    if edit and not same_prompt and control is None and not get_method(state.method).edits_alone:
        raise InvalidValueError(f"{state.method!r} regenerates every image as its source: it edits beside the source "
                                "branch, with a control (control=FeatureInjection() or PromptToPrompt())")
    if (not edit or same_prompt) and "guidance_scale" in inverted and float(guidance_scale) != inverted["guidance_scale"]:
        warnings.warn(f"the inversion was made at guidance {inverted['guidance_scale']:g}, this regeneration uses "
                      f"{float(guidance_scale):g}: the round trip will not be exact (pass the same guidance_scale)",
                      ExactnessWarning, stacklevel=4)
    ratio = state.noise_stats.get("ratio", 1.0)
    # with gamma < 1 the growth is the leapfrog's parasitic mode, which the edit's forward steps damp by gamma each,
    # exactly as inversion grew it: that latent is not a bad start
    damped = state.options.get("gamma", 1.0) < 1.0
    # FlowEdit's state is the image itself, never noise: the check is about inverted latents
    if edit and not damped and not get_method(state.method).edits_beside_source and ratio > EDIT_NOISE_RATIO_WARN:
        warnings.warn(f"this edit starts from an inverted latent {ratio:.3g} times the noise level of its timestep "
                      "(not noise-like); edits from it can go astray: use gamma = 1, fewer steps or a lower strength",
                      ExactnessWarning, stacklevel=4)


def initial_noise(shape: tuple, latents, generator, device, dtype) -> torch.Tensor:
    """Standard normal starting latents of ``shape`` (from ``generator``), or the given ``latents`` checked."""
    if latents is not None:
        if tuple(latents.shape) != tuple(shape):
            raise InvalidValueError(f"latents of shape {tuple(latents.shape)}, expected {tuple(shape)}")
        return latents.to(device, dtype)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32,
                        device=generator.device if generator is not None else "cpu")
    return noise.to(device, dtype)
