"""Load diffusers models from a hub id or a local folder through one function, failing clearly offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import InvalidValueError, ModelNotAvailableError

__all__ = ["ModelNotAvailableError", "load_unet", "load_pipeline", "network_copy", "cast_network", "cast_pipeline"]

_CI_HINT = ("The 'paper' profile downloads hub models and needs internet access; offline, "
            "`python -m bdia standins --out DIR` writes stand-ins of the paper's models (published architectures, "
            "random weights) to use with HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1. The 'ci' profile uses models that ship "
            "with bdia (bdia.digits.shipped_model_path()) or are built in code (bdia.diffusers.tiny_stable_diffusion()).")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class _ConfigReader:
    """``from_pretrained`` that returns a model class's config dict instead of the model."""

    def __init__(self, cls):
        self.cls = cls

    def from_pretrained(self, model_id, **kwargs):
        kwargs.pop("torch_dtype", None)
        kwargs.pop("dtype", None)
        return dict(self.cls.load_config(model_id, **kwargs))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("BDIA_OFFLINE", "").lower() in ("1", "true", "yes")


def _local_path(model_id) -> Path | None:
    """The folder ``model_id`` names, or None for a hub id; a path-like id that does not exist is an error."""
    text = str(model_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotAvailableError(f"{path} is a file; a model is a folder (with config.json and weights) "
                                         "or a hub id such as google/ddpm-cifar10-32")
        return path
    if isinstance(model_id, Path) or text.startswith((".", "/", "~")) or os.sep in text.replace("/", "", 1) \
            or not _HUB_ID.match(text):
        raise ModelNotAvailableError(f"no model folder at {path} (and {text!r} is not a hub id of the form "
                                     "owner/name)")
    return None


def _load(cls, model_id, _config_only: bool = False, **kwargs):
    if _config_only:  # read the config alone: which class to build
        cls = _ConfigReader(cls)
    path = _local_path(model_id)
    if path is not None:
        return cls.from_pretrained(path, **kwargs)
    try:  # the local Hugging Face cache first: no network
        return cls.from_pretrained(model_id, local_files_only=True, **kwargs)
    except Exception as cached_error:  # noqa: BLE001 - diffusers raises several kinds here
        if _offline():
            raise ModelNotAvailableError(f"model {model_id!r} is not available offline: it is not a local folder and "
                                         f"not in the Hugging Face cache. {_CI_HINT}") from cached_error
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except Exception as error:  # noqa: BLE001
        raise ModelNotAvailableError(f"model {model_id!r} could not be loaded or downloaded ({type(error).__name__}: "
                                     f"{str(error).splitlines()[0][:200]}). {_CI_HINT}") from error


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` since diffusers 0.36 (``torch_dtype`` before, now deprecated)."""
    import diffusers

    major, minor = (int(part) for part in diffusers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (0, 36) else {"torch_dtype": dtype}


def cast_network(module, dtype: torch.dtype):
    """Cast a diffusers or transformers network to ``dtype`` in place and return it.

    Calls ``torch.nn.Module.to`` directly: diffusers' own ``to`` logs a warning about float32 modules on
    every dtype cast, even for models that have none.
    """
    return torch.nn.Module.to(module, dtype=dtype)


def cast_pipeline(pipe, dtype: torch.dtype):
    """Cast every network of a diffusers pipeline (UNet, VAE, text encoder) to ``dtype`` in place; returns ``pipe``."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            cast_network(component, dtype)
    return pipe


def network_copy(module, dtype: torch.dtype):
    """A copy of a network in another dtype (e.g. a float64 copy of a float32 UNet, for bit-level round trips)."""
    import copy

    return cast_network(copy.deepcopy(module), dtype)


def load_unet(model_id, subfolder: str | None = None, dtype: torch.dtype = torch.float32, device="cpu"):
    """A diffusers UNet (``UNet2DModel`` or ``UNet2DConditionModel``, as its config says) from a hub id
    (``google/ddpm-cifar10-32``; ``stable-diffusion-v1-5/stable-diffusion-v1-5`` with ``subfolder="unet"``)
    or a local folder. The shipped digits model loads the same way: ``load_unet(bdia.digits.shipped_model_path())``.
    """
    import diffusers

    kwargs = {"subfolder": subfolder} if subfolder else {}
    config = _load(diffusers.UNet2DModel, model_id, _config_only=True, **kwargs)
    name = config.get("_class_name", "UNet2DModel")
    if name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise InvalidValueError(f"{model_id} holds a {name}, not a UNet2DModel or UNet2DConditionModel")
    unet = _load(getattr(diffusers, name), model_id, **_dtype_kwarg(dtype), **kwargs).to(device).eval()
    return cast_network(unet, dtype)


def load_pipeline(model_id, dtype: torch.dtype = torch.float32, device="cpu"):
    """A ``StableDiffusionPipeline`` from a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``,
    ``stabilityai/stable-diffusion-2-1-base``) or a local folder (e.g. a saved :func:`tiny_stable_diffusion`)."""
    from diffusers import StableDiffusionPipeline

    pipe = _load(StableDiffusionPipeline, model_id, safety_checker=None, requires_safety_checker=False,
                 **_dtype_kwarg(dtype))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)
