"""Load diffusers models from a hub id or a local folder through one function, failing clearly offline."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path

import torch

from ..errors import InvalidValueError, MissingFileError, ModelNotAvailableError

__all__ = ["ModelNotAvailableError", "load_unet", "load_pipeline", "load_scheduler_config", "network_copy",
           "cast_network", "cast_pipeline", "PIPELINE_CLASSES"]

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


@contextlib.contextmanager
def _without_fallback_notices():
    """Silence two notices of a load that succeeds: diffusers logs an *error* when a repository has no safetensors
    file before it reads the pickled ``.bin`` (google/ddpm-cifar10-32 has only that), and its config reader passes
    huggingface_hub an argument the hub deprecated. A load that really fails still raises."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        logger.setLevel(level)


def _load(cls, model_id, _config_only: bool = False, **kwargs):
    with _without_fallback_notices():
        return _load_noisy(cls, model_id, _config_only, **kwargs)


def _load_noisy(cls, model_id, _config_only: bool = False, **kwargs):
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


def _load_weights(cls, model_id, dtype: torch.dtype, **kwargs):
    """``_load`` of a model's weights in ``dtype``: for float16, the repository's ``fp16`` variant where it has one
    (half the download, and the file a GPU run is meant to read), else its default files, cast."""
    if dtype == torch.float16:
        try:
            return _load(cls, model_id, variant="fp16", **_dtype_kwarg(dtype), **kwargs)
        except Exception as error:  # noqa: BLE001 - no fp16 variant: the default files below
            if not _missing_variant(error):
                raise
    return _load(cls, model_id, **_dtype_kwarg(dtype), **kwargs)


def _missing_variant(error: BaseException) -> bool:
    """Whether a loading error (or one it was raised from) says the requested variant's files do not exist."""
    while error is not None:
        text = str(error)
        if "fp16" in text or "variant" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def load_scheduler_config(model_id, subfolder: str | None = None) -> dict:
    """The scheduler config (``scheduler_config.json``) published with a model, from the same place as its weights
    (a local folder, the Hugging Face cache, or the hub): the noise schedule the model was trained with. A model
    without one is an error that says so; bdia never substitutes a default schedule for it."""
    from diffusers import DDPMScheduler

    kwargs = {"subfolder": subfolder} if subfolder else {}
    where = f"{model_id}/{subfolder}" if subfolder else str(model_id)
    try:
        return dict(_load(DDPMScheduler, model_id, _config_only=True, **kwargs))
    except ModelNotAvailableError as error:
        raise ModelNotAvailableError(
            f"the scheduler config of {where} (scheduler_config.json, the noise schedule the model was trained with) "
            f"is neither in the local Hugging Face cache nor downloadable here; bdia will not guess a schedule. "
            f"{_CI_HINT}") from error
    except Exception as error:  # noqa: BLE001 - a local folder without the file
        raise MissingFileError(
            f"{where} has no scheduler_config.json: bdia reads the noise schedule a model was trained with from it "
            "(betas, their schedule, the number of training steps) and will not guess one. Put the scheduler config "
            "of the model's training beside its config.json") from error


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
    In float16 the repository's ``fp16`` variant is read where it has one.
    """
    import diffusers

    kwargs = {"subfolder": subfolder} if subfolder else {}
    config = _load(diffusers.UNet2DModel, model_id, _config_only=True, **kwargs)
    name = config.get("_class_name", "UNet2DModel")
    if name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise InvalidValueError(f"{model_id} holds a {name}, not a UNet2DModel or UNet2DConditionModel")
    unet = _load_weights(getattr(diffusers, name), model_id, dtype, **kwargs).to(device).eval()
    return cast_network(unet, dtype)


#: the pipeline classes :func:`load_pipeline` builds, by the ``_class_name`` of a repository's ``model_index.json``
PIPELINE_CLASSES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline")


def load_pipeline(model_id, dtype: torch.dtype = torch.float32, device="cpu"):
    """A diffusers pipeline from a hub id or a local folder, of the class its ``model_index.json`` names: Stable
    Diffusion 1.x/2.x (``stable-diffusion-v1-5/stable-diffusion-v1-5``, without its safety checker), Stable
    Diffusion XL (``stabilityai/stable-diffusion-xl-base-1.0``), Stable Diffusion 3 or FLUX."""
    import diffusers

    index = _load(diffusers.DiffusionPipeline, model_id, _config_only=True)
    name = index.get("_class_name", "")
    if name not in PIPELINE_CLASSES:
        raise InvalidValueError(f"{model_id} holds a {name or 'pipeline without a class name'}; load_pipeline builds "
                                f"{', '.join(PIPELINE_CLASSES)}")
    # components the repository leaves out (SD3 without its T5 encoder, say) are passed as absent
    extra = {key: None for key, value in index.items() if value == [None, None]}
    if name == "StableDiffusionPipeline":
        extra.update(safety_checker=None, requires_safety_checker=False)
    pipe = _load_weights(getattr(diffusers, name), model_id, dtype, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)
