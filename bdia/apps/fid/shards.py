"""The shard store of an FID run: sampled images on disk, complete or absent, and checked before use.

Samples are written as shards of ``batch_size`` uint8 images
(``samples/<method>/calls<NNN>/shard_<KKKKK>.safetensors``, :func:`shard_path`). A shard is written to a
temporary file, flushed to disk and renamed (:func:`write_shard`), so a shard on disk is always complete;
its metadata (method, budget, steps, seed, shard index, shape, code version, a checksum of its images) is
verified when a rerun looks for missing work and again before scoring (:func:`read_shard`), and a shard that
fails the check is named and sampled again, never scored. ``manifest.json`` records what the shards depend
on, so a folder is never resumed with another model, seed or code (:func:`check_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ...errors import UsageError
from ...methods import MethodSpec

__all__ = ["SHARD_FORMAT", "ManifestMismatchError", "ShardError", "shard_slug", "shard_path", "shard_metadata",
           "write_shard", "read_shard", "check_manifest"]

SHARD_FORMAT = "2"


class ManifestMismatchError(UsageError, ValueError):
    """An output folder holds shards made with another model, seed, batch size, detector or code version."""


class ShardError(ValueError):
    """A shard on disk is damaged or does not belong to this run."""


def check_manifest(out_dir: Path, expected: dict) -> None:
    """Write ``manifest.json`` in a new folder; in an old one, an error naming every field that differs."""
    path = Path(out_dir) / "manifest.json"
    if path.exists():
        found = json.loads(path.read_text())
        diff = sorted(k for k in set(expected) | set(found) if found.get(k) != expected.get(k))
        if diff:
            raise ManifestMismatchError(
                f"{out_dir} holds shards made with a different {', '.join(diff)} (see manifest.json); resuming "
                "would mix them. Use a new output folder, or delete this one to start over.")
    else:
        path.write_text(json.dumps(expected, indent=2))


def shard_slug(spec: MethodSpec) -> str:
    """The folder name of a method's shards: ``bdia:gamma=0.5`` -> ``bdia_gamma0.5``."""
    return str(spec).replace(":", "_").replace("=", "").replace(",", "_")


def shard_path(out_dir, spec: MethodSpec, calls: int, k: int) -> Path:
    """Where shard ``k`` of ``spec`` at a budget of ``calls`` network calls lives in an output folder."""
    return Path(out_dir) / "samples" / shard_slug(spec) / f"calls{calls:03d}" / f"shard_{k:05d}.safetensors"


def shard_metadata(cfg, spec: MethodSpec, calls: int, k: int, shape: tuple, code: str) -> dict:
    """The metadata a shard of this run carries (and is checked against): strings, as safetensors stores them."""
    batch = min(cfg.batch_size, cfg.num_samples - k * cfg.batch_size)
    return {"format": SHARD_FORMAT, "method": str(spec), "budget": str(calls),
            "steps": str(spec.record.steps_for_budget(calls)), "seed": str(cfg.seed), "shard": str(k),
            "shape": ",".join(str(d) for d in (batch, *shape)), "code": code}


def _images_digest(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def write_shard(path: Path, images: Tensor, metadata: dict) -> None:
    """Write, flush to disk, then rename: a shard on disk is complete, even after a power loss."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"images": images.contiguous()}, str(tmp), metadata={**metadata, "sha256": _images_digest(images)})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_shard(path: Path, expected: dict) -> tuple[Tensor, dict]:
    """The images of a shard and its metadata; :class:`ShardError` naming the file when anything is off."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            images = f.get_tensor("images")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise ShardError(f"{path}: unreadable ({type(error).__name__}: {str(error)[:120]})") from error
    wrong = [k for k, v in expected.items() if meta.get(k) != v]
    if wrong:
        raise ShardError(f"{path}: made for another run ({', '.join(f'{k}={meta.get(k)!r}, expected {expected[k]!r}' for k in wrong)})")
    if images.dtype != torch.uint8 or ",".join(str(d) for d in images.shape) != expected["shape"]:
        raise ShardError(f"{path}: holds {images.dtype} images of shape {tuple(images.shape)}, expected uint8 "
                         f"({expected['shape']})")
    if meta.get("sha256") != _images_digest(images):
        raise ShardError(f"{path}: its images do not match the checksum written with them (altered bytes)")
    return images, meta
