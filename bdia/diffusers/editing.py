"""Real-image inversion and editing with a Stable Diffusion pipeline (eq. 1 in the VAE's latent space)::

    result = edit_image(pipe, "cat.png", "a cat", "a tiger", num_steps=50, strength=0.8,
                        guidance_scale=3.0, method="bdia", gamma=0.96)

One code path: :func:`edit_image` and :func:`invert_image` are thin calls into
:class:`~bdia.diffusers.BDIAEditPipeline`, which encodes the image with the VAE (the latent distribution's
mean: deterministic), inverts it under the source prompt for ``round(strength * num_steps)`` steps,
regenerates it under the target prompt, and decodes. With the target prompt equal to the source prompt
the exact methods return the encoded latent up to rounding. Images are prepared by the pipeline's own
image processor (center crop, resize) in :func:`prepare_image`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..samplers import InversionState

__all__ = ["pipeline_resolution", "prepare_image", "encode_image", "decode_latents", "invert_image", "edit_image",
           "EditResult"]


def pipeline_resolution(pipe) -> int:
    """Image side length the pipeline's UNet was built for (``sample_size * vae_scale_factor``)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def _as_pil_or_tensor(image):
    """A path, PIL image, numpy array (uint8 or floats in [0, 1]) or tensor in [-1, 1], as the image processor takes it."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        return Image.open(path).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
        arr = image[..., :3]
        if arr.dtype != np.uint8:
            arr = np.clip(np.asarray(arr, dtype=np.float64) * 255 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr)
    if torch.is_tensor(image):
        tensor = image if image.dim() == 4 else image[None]
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise ValueError(f"an image tensor must be (3, H, W) or (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        return tensor
    raise TypeError(f"expected an image (file path, PIL image, numpy array or tensor), got {type(image).__name__}")


def prepare_image(pipe, image, resize: bool = True, size: int | None = None) -> Tensor:
    """An image (path, PIL, array or tensor) as the ``(B, 3, H, W)`` tensor in [-1, 1] the VAE encodes.

    Images other than tensors are center-cropped and resized by the pipeline's image processor to ``size``
    (default: the pipeline's resolution; a multiple of the VAE's downsampling times 8) unless
    ``resize=False``; a tensor must already have that size.
    """
    side = pipeline_resolution(pipe) if size is None else int(size)
    step = int(pipe.vae_scale_factor) * 8
    if side < step or side % step:
        raise ValueError(f"image size {side} must be a positive multiple of {step} for this pipeline")
    image = _as_pil_or_tensor(image)
    if torch.is_tensor(image):
        tensor = image.float()
    elif resize:
        tensor = pipe.image_processor.preprocess(image, height=side, width=side, resize_mode="crop").float()
    else:
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    if tuple(tensor.shape[-2:]) != (side, side):
        raise ValueError(f"image size {tuple(tensor.shape[-2:])} does not match the pipeline's resolution "
                         f"{(side, side)}; pass resize=True or resize the image to {side}x{side}")
    return tensor


@torch.no_grad()
def encode_image(pipe, image, dtype: torch.dtype = torch.float64, resize: bool = True,
                 size: int | None = None) -> Tensor:
    """VAE latent of an image (path, PIL, array or tensor), scaled by the VAE's scaling factor, in ``dtype``."""
    x = prepare_image(pipe, image, resize, size).to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    latent = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    return latent.to(dtype)


@torch.no_grad()
def decode_latents(pipe, latents: Tensor, output_type: str = "pil"):
    """Images of latents through the VAE and the pipeline's image processor (``"pil"``, ``"np"`` or ``"pt"``)."""
    image = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=[True] * len(image))


def _edit_pipeline(pipe):
    from .pipeline import BDIAEditPipeline

    if isinstance(pipe, BDIAEditPipeline):
        return pipe
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    return edit


def invert_image(pipe, image, prompt: str, num_steps: int = 50, method: str = "bdia", strength: float = 1.0,
                 guidance_scale: float = 1.0, dtype: torch.dtype = torch.float64, **options) -> InversionState:
    """Invert an image under ``prompt``; returns the :class:`~bdia.InversionState` (latents in ``dtype``), which
    records the guidance scale, the prompt's fingerprint and the latent dtype. A call into
    :meth:`BDIAEditPipeline.invert`."""
    return _edit_pipeline(pipe).invert(image, prompt, num_steps, strength=strength, guidance_scale=guidance_scale,
                                       method=method, latent_dtype=dtype, **options)


@dataclass
class EditResult:
    """Output of :func:`edit_image`."""

    images: list
    latent: Tensor
    source_latent: Tensor
    state: InversionState
    invert_calls: int
    regenerate_calls: int
    invert_seconds: float
    regenerate_seconds: float

    @property
    def calls(self) -> int:
        return self.invert_calls + self.regenerate_calls


def edit_image(pipe, image, source_prompt: str, target_prompt: str, num_steps: int = 50, method: str = "bdia",
               strength: float = 0.8, guidance_scale: float = 3.0, dtype: torch.dtype = torch.float64,
               size: int | None = None, **options) -> EditResult:
    """Invert ``image`` under ``source_prompt`` and regenerate it under ``target_prompt`` (``method`` in ``ddim``,
    ``edict``, ``bdia``, ``obelm``) with :class:`BDIAEditPipeline`. Defaults follow the EDICT reference setup:
    50 steps, 40 inverted (``strength=0.8``), guidance 3; for BDIA pass ``gamma`` (e.g. 0.96)."""
    edit = _edit_pipeline(pipe)
    source = encode_image(edit, image, dtype=dtype, size=size)
    start = time.perf_counter()
    state = edit.invert(source, source_prompt, num_steps, strength=strength, guidance_scale=guidance_scale,
                        method=method, latent_dtype=dtype, **options)
    invert_calls, mid = edit.num_network_calls, time.perf_counter()
    edited = edit(target_prompt, inversion=state, output_type="latent").images
    end = time.perf_counter()
    return EditResult(decode_latents(edit, edited), edited, source, state, invert_calls, edit.num_network_calls,
                      mid - start, end - mid)
