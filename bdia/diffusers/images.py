"""Images in and out of a latent-diffusion pipeline: files, PIL images, arrays and tensors to the VAE's latent
space (eq. 1 holds there) and back.

:func:`prepare_image` turns a path, PIL image, numpy array or tensor into the ``(B, 3, H, W)`` tensor in
[-1, 1] that the VAE encodes (the pipeline's own image processor crops and resizes it);
:func:`encode_image` takes the mean of the VAE's latent distribution (deterministic) and scales it by the
VAE's scaling factor; :func:`decode_latents` goes back through the VAE and the image processor. The editing
pipelines (:class:`~bdia.diffusers.BDIAEditPipeline`) use these; so can a custom loop.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidTypeError, InvalidValueError, MissingFileError
from .loading import cast_network

__all__ = ["pipeline_resolution", "size_multiple", "prepare_image", "encode_image", "decode_latents"]


def _denoiser(pipe):
    """The pipeline's UNet or transformer."""
    return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def pipeline_resolution(pipe) -> int:
    """Image side length the pipeline was built for: its UNet's or transformer's ``sample_size`` (FLUX: its
    ``default_sample_size``) times the VAE's downsampling."""
    size = getattr(_denoiser(pipe).config, "sample_size", None) or pipe.default_sample_size
    return int(size) * int(pipe.vae_scale_factor)


def size_multiple(pipe) -> int:
    """Image sides must be multiples of this: a UNet's downsampling (8) or a transformer's patch, times the VAE's
    (FLUX also packs 2x2 latents, which its image processor's factor includes)."""
    if getattr(pipe, "unet", None) is not None:
        return int(pipe.vae_scale_factor) * 8
    return int(pipe.image_processor.config.vae_scale_factor) * int(pipe.transformer.config.patch_size)


def _as_pil_or_tensor(image):
    """A path, PIL image, numpy array (uint8 or floats in [0, 1]) or tensor in [-1, 1], as the image processor takes it."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise MissingFileError(f"no image file at {path}")
        return Image.open(path).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (3, 4):
            raise InvalidValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
        arr = image[..., :3]
        if arr.dtype != np.uint8:
            arr = np.clip(np.asarray(arr, dtype=np.float64) * 255 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr)
    if torch.is_tensor(image):
        tensor = image if image.dim() == 4 else image[None]
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise InvalidValueError(f"an image tensor must be (3, H, W) or (B, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        return tensor
    raise InvalidTypeError(f"expected an image (file path, PIL image, numpy array or tensor), got {type(image).__name__}")


def prepare_image(pipe, image, resize: bool = True, size: int | None = None) -> Tensor:
    """An image (path, PIL, array or tensor) as the ``(B, 3, H, W)`` tensor in [-1, 1] the VAE encodes.

    Images other than tensors are center-cropped and resized by the pipeline's image processor to ``size``
    (default: the pipeline's resolution; a multiple of the VAE's downsampling times 8) unless
    ``resize=False``; a tensor must already have that size.
    """
    side = pipeline_resolution(pipe) if size is None else int(size)
    step = size_multiple(pipe)
    if side < step or side % step:
        raise InvalidValueError(f"image size {side} must be a positive multiple of {step} for this pipeline")
    image = _as_pil_or_tensor(image)
    if torch.is_tensor(image):
        tensor = image.float()
    elif resize:
        tensor = pipe.image_processor.preprocess(image, height=side, width=side, resize_mode="crop").float()
    else:
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    if tuple(tensor.shape[-2:]) != (side, side):
        raise InvalidValueError(f"image size {tuple(tensor.shape[-2:])} does not match the pipeline's resolution "
                         f"{(side, side)}; pass resize=True or resize the image to {side}x{side}")
    return tensor


@contextlib.contextmanager
def _vae_precision(vae):
    """The VAE in float32 for the block when it is float16 and its config says it overflows there (SDXL's
    ``force_upcast``), as SDXL's pipeline does; cast back afterwards."""
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:
        cast_network(vae, torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            cast_network(vae, torch.float16)


@torch.no_grad()
def encode_image(pipe, image, dtype: torch.dtype = torch.float64, resize: bool = True,
                 size: int | None = None) -> Tensor:
    """VAE latent of an image (path, PIL, array or tensor) as the pipeline's denoiser sees it, in ``dtype``: the mean of
    the VAE's latent distribution, shifted by its ``shift_factor`` (SD3, FLUX) and scaled by its ``scaling_factor``."""
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    with _vae_precision(pipe.vae) as vae_dtype:
        x = prepare_image(pipe, image, resize, size).to(device=pipe.vae.device, dtype=vae_dtype)
        latent = (pipe.vae.encode(x).latent_dist.mean - shift) * pipe.vae.config.scaling_factor
    return latent.to(dtype)


@torch.no_grad()
def decode_latents(pipe, latents: Tensor, output_type: str = "pil"):
    """Images of latents through the VAE and the pipeline's image processor (``"pil"``, ``"np"`` or ``"pt"``)."""
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    with _vae_precision(pipe.vae) as vae_dtype:
        image = pipe.vae.decode(latents.to(vae_dtype) / pipe.vae.config.scaling_factor + shift, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=[True] * len(image))
