"""Reference statistics for FID: an ``.npz`` statistics file, a folder of images, or a hub data set.

:func:`reference_stats` returns ``{"mu", "sigma"}`` and a description of the reference; statistics computed
from images (a folder, or the ``train`` split of a Hugging Face data set such as ``uoft-cs/cifar10``) are
cached as EDM-style ``.npz`` files under ``$BDIA_CACHE/fid-refs`` (default ``$XDG_CACHE_HOME/bdia`` or ``~/.cache/bdia``), keyed by the
images and the detector.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ...errors import InvalidValueError, MissingFileError, MissingPackageError, ModelNotAvailableError
from .. import labels
from ..files import sha256_file
from .features import Detector, image_stats

__all__ = ["reference_stats", "default_cache_dir"]


def _image_folder_batches(folder: Path, files: list[Path], batch: int = 250):
    from PIL import Image

    for start in range(0, len(files), batch):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[start:start + batch]]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InvalidValueError(f"the images in {folder} have different sizes {sorted(shapes)}; resize them first")
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def default_cache_dir() -> Path:
    """Where computed reference statistics are cached: ``$BDIA_CACHE/fid-refs``, by default under the user's
    cache folder (``$XDG_CACHE_HOME/bdia``, else ``~/.cache/bdia``)."""
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("BDIA_CACHE") or user_cache / "bdia") / "fid-refs"


def reference_stats(reference, detector: Detector, cache_dir=None, device="cpu") -> tuple[dict, dict]:
    """``({"mu", "sigma"}, description)`` of a reference set: an ``.npz`` statistics file, a folder of images,
    or a Hugging Face data set id (its ``train`` split), whose statistics are computed once and cached."""
    ref = str(reference)
    path = Path(ref).expanduser()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if ref.endswith(".npz"):
        if not path.is_file():
            raise MissingFileError(f"no reference statistics file at {path} (EDM publishes CIFAR10's as "
                                    "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz)")
        with np.load(path) as data:
            if "mu" not in data or "sigma" not in data:
                raise InvalidValueError(f"{path} has no 'mu' and 'sigma' arrays (EDM's statistics format)")
            stats = {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64)}
        if stats["mu"].shape != (detector.dim,):
            raise InvalidValueError(f"{path} holds {stats['mu'].shape[0]}-d statistics, the detector gives {detector.dim}-d")
        return stats, {"reference": str(path), "kind": "statistics file", "sha256": sha256_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if len(files) < 2:
            raise InvalidValueError(f"the reference folder {path} holds {len(files)} images; need at least 2")
        listing = hashlib.sha256("".join(f"{f.name}:{f.stat().st_size}:{sha256_file(f)}" for f in files).encode())
        key = f"folder-{listing.hexdigest()[:16]}-{detector.sha256[:12]}.npz"
        weights = labels.STANDIN_LABEL if labels.is_standin(path) else labels.TRAINED_LABEL
        description = {"reference": str(path.resolve()), "kind": "image folder", "images": len(files),
                       "sha256": listing.hexdigest(), "weights": weights}
        return _cached(cache / key, lambda: image_stats(detector, _image_folder_batches(path, files), device)), description
    if path.exists():
        raise InvalidValueError(f"reference {path} is neither an .npz statistics file nor a folder of images")
    key = f"{ref.replace('/', '--')}-train-{detector.sha256[:12]}.npz"
    description = {"reference": ref, "kind": "hub data set (train split)"}
    if (cache / key).is_file():
        return _cached(cache / key, None), description

    def compute():
        try:
            from datasets import load_dataset
        except ModuleNotFoundError as error:
            raise MissingPackageError(f"the reference {ref!r} is a hub data set: pip install datasets (the paper "
                                      "extra), or pass an .npz statistics file or a folder of images") from error
        try:
            data = load_dataset(ref, split="train")
        except Exception as error:  # noqa: BLE001 - datasets raises many kinds offline
            raise ModelNotAvailableError(f"the reference data set {ref!r} is not available ({type(error).__name__}): it needs "
                          f"internet access once, or pass --reference with an .npz statistics file (e.g. EDM's "
                          "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz) or a folder of images") from error
        column = next(c for c in ("img", "image") if c in data.column_names)

        def batches():
            for start in range(0, len(data), 1000):
                chunk = data[start:start + 1000][column]
                yield torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in chunk])

        return image_stats(detector, batches(), device)

    return _cached(cache / key, compute), description


def _cached(path: Path, compute) -> dict:
    if not path.is_file():
        compute().save(path)
    with np.load(path) as data:
        return {"mu": data["mu"], "sigma": data["sigma"]}
