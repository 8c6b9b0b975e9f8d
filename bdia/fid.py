"""FID experiments that survive interruption, computed the way EDM computes FID.

``run_fid`` samples ``num_samples`` images per (method, network-call budget) and writes them as shards
of ``batch_size`` uint8 images (``samples/<method>/calls<NNN>/shard_<KKKKK>.safetensors``). A shard is
written to a temporary file, flushed to disk and renamed, so a shard on disk is always complete; its
metadata (method, budget, steps, seed, shard index, shape, code version, a checksum of its images) is
verified when a rerun looks for missing work and again before scoring, and a shard that fails the check
is named and sampled again, never scored. Shard ``k`` always starts from the same noise (seeded by
``seed`` and ``k``), the same for every method, so comparisons are paired and a resumed run equals an
uninterrupted one. Shards are spread over processes with Hugging Face ``accelerate``
(``accelerate launch -m bdia fid ...``); the main process scores them.

Scores follow NVlabs' EDM ``fid.py``: features of uint8 images from a fixed detector, their mean and
covariance accumulated in float64 (:class:`FeatureStats`), and the Fréchet distance
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (:func:`frechet_distance`).

Profiles:

* ``paper``: ``google/ddpm-cifar10-32`` (unconditional DDPM), 3x32x32 images; with ``edm_model``, Heun
  and BDIA-EDM run on an NVlabs EDM checkpoint instead (:func:`load_edm_denoiser`), else on the DDPM in
  EDM's variables. Features: the TorchScript translation of TF-FID's Inception-v3 that NVlabs' metrics
  use (:func:`load_detector`; 2048-d). Reference (:func:`reference_stats`): an EDM statistics file
  (``.npz`` with ``mu`` and ``sigma``, e.g. EDM's ``cifar10-32x32.npz``), a folder of images, or a hub
  data set (default ``uoft-cs/cifar10``, training split), whose statistics are cached as ``.npz``.
* ``ci``: the digits DDPM shipped with bdia, sampled unconditionally, 1x8x8 images; features: the 64-d
  penultimate layer of the digit classifier shipped with bdia (:func:`digit_detector`); reference: all
  1797 digits. These are digits, not CIFAR10.

Everything a run needs (model, detector, reference, optional packages, a writable output folder) is
resolved before the first sample, and a missing piece is named with the way to get it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import standins
from ._files import check_writable, code_digest, sha256_file
from .experiments import MethodSpec, parse_methods
from .models import CountingModel
from .samplers import sample
from .schedules import VPSchedule

__all__ = ["FIDConfig", "run_fid", "steps_for_budget", "frechet_distance", "FeatureStats", "image_stats",
           "Detector", "DigitFeatures", "digit_detector", "load_detector", "reference_stats", "PROFILES",
           "read_results", "fingerprint", "fingerprinted_dir", "ManifestMismatchError", "ShardError",
           "load_edm_denoiser", "to_uint8", "real_subset_spread", "PAPER_MODEL", "PAPER_REFERENCE",
           "DETECTOR_URL"]

PROFILES = ("ci", "paper")
PAPER_MODEL = standins.CIFAR10_MODEL
PAPER_REFERENCE = "uoft-cs/cifar10"
#: NVlabs' TorchScript translation of TF-FID's Inception-v3 (stylegan2-ada-pytorch's metrics); EDM's fid.py
#: loads the same network from a pickle (``inception-2015-12-05.pkl``), which needs NVlabs' code to unpickle
DETECTOR_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
DETECTOR_FILE = standins.DETECTOR_FILE
_SHARD_FORMAT = "2"


def steps_for_budget(method: str, calls: int) -> int:
    """The most steps whose network calls fit in ``calls`` (N for DDIM/BDIA/O-BELM, 2N for EDICT, 2N-1 for Heun)."""
    if method in ("edict",):
        steps = calls // 2
    elif method in ("heun", "bdia-edm"):
        steps = (calls + 1) // 2
    else:
        steps = calls
    minimum = 2 if method in ("bdia", "obelm", "bdia-edm") else 1
    if steps < minimum:
        raise ValueError(f"a budget of {calls} network calls is too small for {method!r}")
    return steps


# ---------------------------------------------------------------------------------------------
# statistics and distances


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``, the Fréchet distance of two Gaussians.

    The trace of the square root is ``sum sqrt(lambda)`` over the eigenvalues of the symmetric
    ``C1^(1/2) C2 C1^(1/2)``, which has the eigenvalues of ``C1 C2``: the value EDM's ``fid.py`` gets from
    SciPy's ``sqrtm``, from two symmetric eigendecompositions (seconds, not minutes, at 2048 dimensions).
    """
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    w, v = np.linalg.eigh(cov1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root @ cov2 @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    mean_term = np.square(np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)).sum()
    return float(mean_term + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)


class FeatureStats:
    """Running mean and covariance of feature vectors, accumulated in float64 (EDM's ``fid.py`` convention:
    ``sigma = (sum f f^T - n mu mu^T) / (n - 1)``)."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features) -> None:
        f = torch.as_tensor(features).detach().to("cpu", torch.float64).numpy()
        if f.ndim != 2 or f.shape[1] != len(self.total):
            raise ValueError(f"features of shape {f.shape}, expected (n, {len(self.total)})")
        if not np.isfinite(f).all():
            raise ValueError("the detector returned non-finite features")
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    @property
    def mu(self) -> np.ndarray:
        return self.total / self.count

    @property
    def sigma(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"need at least 2 images for a covariance, got {self.count}")
        return (self.outer - np.outer(self.mu, self.mu) * self.count) / (self.count - 1)

    def fid(self, other: "FeatureStats | dict") -> float:
        """Fréchet distance to another :class:`FeatureStats` or to ``{"mu": ..., "sigma": ...}``."""
        mu, sigma = (other.mu, other.sigma) if isinstance(other, FeatureStats) else (other["mu"], other["sigma"])
        return frechet_distance(self.mu, self.sigma, mu, sigma)

    def save(self, path) -> None:
        """An EDM-style statistics file (``mu``, ``sigma``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, count=self.count)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# detectors


class DigitFeatures(nn.Module):
    """uint8 digit images ``(n, 1, 8, 8)`` to the 64-d penultimate features of a :class:`~bdia.digits.DigitClassifier`.

    Evaluated in float64, so that the features (and the FID) do not depend on the summation order of the
    CPU's kernels, which changes with the number of threads or processes.
    """

    num_features = 64

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier.eval().double()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.double() / 127.5 - 1.0)


@dataclass
class Detector:
    """A fixed feature network: uint8 images ``(n, C, H, W)`` to ``(n, dim)`` features.

    ``sha256`` identifies its weights (a manifest refuses shards scored with another detector), ``weights``
    says whether they are published or a stand-in, ``channels`` how many image channels it takes (grey
    images are repeated to 3 for an RGB detector, as EDM does).
    """

    name: str
    network: Callable
    dim: int
    sha256: str
    weights: str = standins.TRAINED_LABEL
    channels: int = 3
    kwargs: dict = field(default_factory=dict)
    batch_size: int = 250

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"a detector takes uint8 images (n, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1 and self.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        out = [self.network(chunk, **self.kwargs) for chunk in images.split(self.batch_size)]
        return torch.cat(out).to(torch.float64)


def image_stats(detector: Detector, batches: Iterable[Tensor], device="cpu") -> FeatureStats:
    """:class:`FeatureStats` of the detector's features over batches of uint8 images."""
    stats = FeatureStats(detector.dim)
    for images in batches:
        stats.update(detector(images.to(device)))
    return stats


def digit_detector(path=None) -> Detector:
    """The ``ci`` profile's detector: the digit classifier shipped with bdia (``python -m bdia train-classifier``)."""
    from . import digits

    classifier, _ = digits.load_classifier(path)
    weights = Path(path) if path else digits.shipped_classifier_path()
    return Detector("digit classifier, 64-d penultimate features", DigitFeatures(classifier), 64,
                    sha256_file(weights / "model.safetensors"), channels=1)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_detector(path=None, device="cpu", offline: bool | None = None) -> Detector:
    """The paper profile's Inception-v3 detector (2048-d features), loaded with PyTorch alone.

    Without ``path``: ``<torch hub>/checkpoints/inception-2015-12-05.pt``, downloaded on first use from
    :data:`DETECTOR_URL` (NVlabs' TorchScript archive; ``torch.jit.load`` runs TorchScript, never arbitrary
    Python). No published digest of that file could be checked when this was written, so none is pinned:
    the sha256 of the file used is recorded with every result instead. With ``path``: a TorchScript archive
    is loaded the same way; a pickle (EDM's ``inception-2015-12-05.pkl``) is unpickled with a warning,
    which needs NVlabs' ``dnnlib`` and ``torch_utils`` and runs code from the file: trusted files only.
    """
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if path is None:
        file = _hub_checkpoints() / DETECTOR_FILE
        if not file.is_file():
            if offline:
                raise FileNotFoundError(
                    f"the FID detector is not on this machine ({file}) and the network is off. Download "
                    f"{DETECTOR_URL} into {file.parent} (or set TORCH_HOME), pass --detector PATH, or for a dry run "
                    "write stand-ins with `python -m bdia standins --out DIR` and set TORCH_HOME=DIR/torch")
            file.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(DETECTOR_URL, str(file), progress=True)
            except Exception as error:  # noqa: BLE001 - urllib raises several kinds
                raise OSError(f"could not download the FID detector from {DETECTOR_URL}: {error}") from error
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"no FID detector at {file}")
    import zipfile

    if zipfile.is_zipfile(file):  # a TorchScript archive
        extra = {standins.MARKER: ""}
        try:
            network = torch.jit.load(str(file), map_location=device, _extra_files=extra).eval()
        except RuntimeError as error:
            raise ValueError(f"{file} is not a TorchScript detector: {str(error).splitlines()[0]}") from error
        weights = standins.STANDIN_LABEL if extra[standins.MARKER] else standins.TRAINED_LABEL
    else:
        warnings.warn(f"unpickling {file}: a pickle runs code from the file; load only files you trust",
                      UserWarning, stacklevel=2)
        import pickle

        try:
            with open(file, "rb") as f:
                network = pickle.load(f).to(device).eval()
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"{file.name} needs NVlabs' dnnlib and torch_utils on the Python path to unpickle "
                                      f"({error}); the TorchScript file {DETECTOR_URL} needs nothing but PyTorch") from error
        except (pickle.UnpicklingError, EOFError, AttributeError) as error:
            raise ValueError(f"{file} is neither a TorchScript archive nor a readable pickle: {error}") from error
        weights = standins.TRAINED_LABEL
    detector = Detector("Inception-v3 (TF-FID, NVlabs' TorchScript), 2048-d pool features", network, 2048,
                        sha256_file(file), weights, 3, {"return_features": True})
    probe = detector(torch.zeros(1, 3, 32, 32, dtype=torch.uint8, device=device))
    if probe.shape != (1, 2048):
        raise ValueError(f"{file} returns features of shape {tuple(probe.shape[1:])}, not 2048-d: not an FID detector")
    return detector


# ---------------------------------------------------------------------------------------------
# reference statistics


def _image_folder_batches(folder: Path, files: list[Path], batch: int = 250):
    from PIL import Image

    for start in range(0, len(files), batch):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[start:start + batch]]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"the images in {folder} have different sizes {sorted(shapes)}; resize them first")
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _cache_dir() -> Path:
    return Path(os.environ.get("BDIA_CACHE", Path.home() / ".cache" / "bdia")) / "fid-refs"


def reference_stats(reference, detector: Detector, cache_dir=None, device="cpu") -> tuple[dict, dict]:
    """``({"mu", "sigma"}, description)`` of a reference set: an ``.npz`` statistics file, a folder of images,
    or a Hugging Face data set id (its ``train`` split), whose statistics are computed once and cached."""
    ref = str(reference)
    path = Path(ref).expanduser()
    cache = Path(cache_dir) if cache_dir else _cache_dir()
    if ref.endswith(".npz"):
        if not path.is_file():
            raise FileNotFoundError(f"no reference statistics file at {path} (EDM publishes CIFAR10's as "
                                    "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz)")
        with np.load(path) as data:
            if "mu" not in data or "sigma" not in data:
                raise ValueError(f"{path} has no 'mu' and 'sigma' arrays (EDM's statistics format)")
            stats = {"mu": data["mu"].astype(np.float64), "sigma": data["sigma"].astype(np.float64)}
        if stats["mu"].shape != (detector.dim,):
            raise ValueError(f"{path} holds {stats['mu'].shape[0]}-d statistics, the detector gives {detector.dim}-d")
        return stats, {"reference": str(path), "kind": "statistics file", "sha256": sha256_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if len(files) < 2:
            raise ValueError(f"the reference folder {path} holds {len(files)} images; need at least 2")
        listing = hashlib.sha256("".join(f"{f.name}:{f.stat().st_size}:{sha256_file(f)}" for f in files).encode())
        key = f"folder-{listing.hexdigest()[:16]}-{detector.sha256[:12]}.npz"
        weights = standins.STANDIN_LABEL if standins.is_standin(path) else standins.TRAINED_LABEL
        description = {"reference": str(path.resolve()), "kind": "image folder", "images": len(files),
                       "sha256": listing.hexdigest(), "weights": weights}
        return _cached(cache / key, lambda: image_stats(detector, _image_folder_batches(path, files), device)), description
    if path.exists():
        raise ValueError(f"reference {path} is neither an .npz statistics file nor a folder of images")
    key = f"{ref.replace('/', '--')}-train-{detector.sha256[:12]}.npz"
    description = {"reference": ref, "kind": "hub data set (train split)"}
    if (cache / key).is_file():
        return _cached(cache / key, None), description

    def compute():
        try:
            from datasets import load_dataset
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"the reference {ref!r} is a hub data set: pip install datasets (the paper "
                                      "extra), or pass an .npz statistics file or a folder of images") from error
        try:
            data = load_dataset(ref, split="train")
        except Exception as error:  # noqa: BLE001 - datasets raises many kinds offline
            raise OSError(f"the reference data set {ref!r} is not available ({type(error).__name__}): it needs "
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


def real_subset_spread(detector: Detector, real: Tensor, num_samples: int, seed: int = 0, repeats: int = 10,
                       reference: FeatureStats | None = None):
    """Mean and sd of the Fréchet distance of ``repeats`` random real subsets of ``num_samples`` images to all of
    ``real``: which differences between samplers are the noise of the score itself."""
    reference = reference or image_stats(detector, [real])
    values = []
    for k in range(repeats):
        idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed + k))[:num_samples]
        values.append(image_stats(detector, [real[idx]]).fid(reference))
    return float(np.mean(values)), float(np.std(values))


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] as uint8 in [0, 255] (clamped and rounded), as FID implementations expect."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


# ---------------------------------------------------------------------------------------------
# EDM checkpoints


def load_edm_denoiser(path, device="cpu"):
    """An EDM denoiser ``D(x, sigma)`` and its image shape from an NVlabs EDM checkpoint (``edm-*.pkl``).

    The checkpoints are pickles of NVlabs' network classes: their repository's ``dnnlib`` and
    ``torch_utils`` must be importable, and, as with any pickle, load only files you trust.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise OSError(f"no EDM checkpoint at {path}; download one of NVlabs' edm-cifar10-32x32-*.pkl files first")
    with open(path, "rb") as f:
        try:
            data = pickle.load(f)
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"{path.name} needs NVlabs' EDM code (dnnlib, torch_utils) on the Python path "
                                      f"to unpickle: {error}") from error
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
            raise ValueError(f"{path} is not an EDM checkpoint (a pickle with an 'ema' network): {error}") from error
    if not isinstance(data, dict) or "ema" not in data:
        raise ValueError(f"{path} is not an EDM checkpoint: it holds no 'ema' network")
    net = data["ema"].to(device).eval()

    @torch.no_grad()
    def denoiser(x: Tensor, sigma) -> Tensor:
        sig = torch.full((x.shape[0],), float(sigma), device=x.device)
        return net(x.to(torch.float32), sig).to(x.dtype)

    return denoiser, (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))


# ---------------------------------------------------------------------------------------------
# configuration, manifest, shards


@dataclass
class FIDConfig:
    """What :func:`run_fid` computes; ``model=None`` picks the profile's model, ``detector=None`` and
    ``reference=None`` the profile's detector and reference set."""

    out_dir: Path
    profile: str = "ci"
    methods: list = field(default_factory=lambda: ["ddim", "bdia:gamma=0.5"])
    budgets: list = field(default_factory=lambda: [10, 20])
    num_samples: int = 2000
    batch_size: int = 500
    seed: int = 0
    model: str | None = None
    edm_model: str | None = None
    detector: str | None = None
    reference: str | None = None
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")
        self.methods = parse_methods(self.methods)
        if not self.methods:
            raise ValueError("no methods given")
        for name, value, least in (("num_samples", self.num_samples, 2), ("batch_size", self.batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not self.budgets:
            raise ValueError("no network-call budgets given")
        for calls in self.budgets:
            if isinstance(calls, bool) or not isinstance(calls, (int, np.integer)) or calls < 1:
                raise ValueError(f"a budget must be a positive integer number of network calls, got {calls!r}")
        for spec in self.methods:
            for calls in self.budgets:
                steps_for_budget(spec.method, calls)
        if self.profile == "ci" and (self.detector or self.reference):
            raise ValueError("the ci profile scores with the shipped digit classifier against sklearn's digits; "
                             "--detector and --reference belong to the paper profile")

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.batch_size)


class ManifestMismatchError(ValueError):
    """An output folder holds shards made with another model, seed, batch size, detector or code version."""


class ShardError(ValueError):
    """A shard on disk is damaged or does not belong to this run."""


_CODE_FILES = ("samplers.py", "steps.py", "schedules.py", "fid.py", "diffusers/models.py")


def _code_version() -> str:
    return code_digest(_CODE_FILES)


def _model_identity(model_id: str) -> tuple[str, str]:
    """``(name, hash)`` of a model: the sha256 of a local folder's weights, else the hub id."""
    path = Path(model_id)
    weights = sorted(path.rglob("*.safetensors")) if path.is_dir() else []
    if weights:
        return path.name, hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()
    return model_id, model_id


def fingerprint(cfg: "FIDConfig", model_id: str) -> dict:
    """What the samples in an output folder depend on: sampler code, model weights, EDM checkpoint, seed, sizes."""
    name, model_hash = _model_identity(model_id)
    edm = None
    if cfg.edm_model:
        edm_path = Path(cfg.edm_model)
        edm = {"name": edm_path.name, "sha256": sha256_file(edm_path) if edm_path.is_file() else None}
    return {"code": _code_version(), "model": name, "model_hash": model_hash, "edm_model": edm, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "num_samples": cfg.num_samples, "profile": cfg.profile}


def default_model_id(cfg: "FIDConfig") -> str:
    """The model a config uses: ``cfg.model``, else the profile's (shipped digits model, or the CIFAR10 DDPM)."""
    if cfg.model:
        return str(cfg.model)
    if cfg.profile == "ci":
        from .digits import shipped_model_path

        return str(shipped_model_path())
    return PAPER_MODEL


def fingerprinted_dir(root, cfg: "FIDConfig") -> Path:
    """``root/<profile>-<hash>``: a folder that only runs with the same code, model and sizes share."""
    digest = hashlib.sha256(json.dumps(fingerprint(cfg, default_model_id(cfg)), sort_keys=True).encode()).hexdigest()
    return Path(root) / f"{cfg.profile}-{digest[:12]}"


def _check_manifest(cfg: "FIDConfig", expected: dict) -> None:
    path = cfg.out_dir / "manifest.json"
    if path.exists():
        found = json.loads(path.read_text())
        diff = sorted(k for k in set(expected) | set(found) if found.get(k) != expected.get(k))
        if diff:
            raise ManifestMismatchError(
                f"{cfg.out_dir} holds shards made with a different {', '.join(diff)} (see manifest.json); resuming "
                "would mix them. Use a new output folder, or delete this one to start over.")
    else:
        path.write_text(json.dumps(expected, indent=2))


def _slug(spec: MethodSpec) -> str:
    return str(spec).replace(":", "_").replace("=", "").replace(",", "_")


def _shard_path(cfg: FIDConfig, spec: MethodSpec, calls: int, k: int) -> Path:
    return cfg.out_dir / "samples" / _slug(spec) / f"calls{calls:03d}" / f"shard_{k:05d}.safetensors"


def _shard_metadata(cfg: FIDConfig, spec: MethodSpec, calls: int, k: int, shape: tuple, code: str) -> dict:
    batch = min(cfg.batch_size, cfg.num_samples - k * cfg.batch_size)
    return {"format": _SHARD_FORMAT, "method": str(spec), "budget": str(calls),
            "steps": str(steps_for_budget(spec.method, calls)), "seed": str(cfg.seed), "shard": str(k),
            "shape": ",".join(str(d) for d in (batch, *shape)), "code": code}


def _images_digest(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def _write_shard(path: Path, images: Tensor, metadata: dict) -> None:
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


def _read_shard(path: Path, expected: dict) -> tuple[Tensor, dict]:
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


# ---------------------------------------------------------------------------------------------
# the profiles and the run


class _Profile:
    """Model, sample shape, detector and reference of a profile, all resolved before any sampling."""

    def __init__(self, cfg: FIDConfig):
        from .diffusers import UNetEpsModel, load_unet

        self.cfg = cfg
        self.schedule = VPSchedule.ddpm()
        self.model_id = default_model_id(cfg)
        unet = load_unet(self.model_id, device=cfg.device)
        if cfg.profile == "ci":
            from . import digits

            # the null label for every sample: unconditional samples, like the CIFAR10 DDPM's
            self.eps_model = UNetEpsModel(unet, class_labels=torch.tensor([digits.NULL_CLASS], device=cfg.device))
        else:
            self.eps_model = UNetEpsModel(unet, scheduler_config=_scheduler_config(self.model_id))
            self.schedule = self.eps_model.schedule
        self.weights = standins.weights_label(self.model_id)
        self.shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.edm = None  # (eps model, schedule) for Heun and BDIA-EDM, when an EDM checkpoint is given
        if cfg.edm_model:
            from .models import eps_model_from_denoiser
            from .schedules import EDMSchedule

            denoiser, shape = load_edm_denoiser(cfg.edm_model, device=cfg.device)
            if shape != self.shape:
                raise ValueError(f"the EDM model makes {shape} images, the DDPM {self.shape}")
            self.edm = (eps_model_from_denoiser(denoiser, EDMSchedule()), EDMSchedule())
        if cfg.profile == "ci":
            self.detector = digit_detector()
        else:
            self.detector = load_detector(cfg.detector, device=cfg.device)
        self.reference = cfg.reference or (None if cfg.profile == "ci" else PAPER_REFERENCE)

    def model_for(self, spec: MethodSpec):
        """The model and schedule a method samples with: EDM's checkpoint and grid for Heun and BDIA-EDM when
        there is one, else the DDPM (on EDM's grid for those two, on the uniform grid for the DDIM family)."""
        if spec.method in ("heun", "bdia-edm"):
            return self.edm or (self.eps_model, self.schedule.with_spacing("karras"))
        return self.eps_model, self.schedule

    def reference_stats(self) -> tuple[dict, dict]:
        if self.cfg.profile == "ci":
            from . import digits

            images, _ = digits.load_digits_images()
            stats = image_stats(self.detector, [to_uint8(images)])
            return {"mu": stats.mu, "sigma": stats.sigma}, {"reference": "sklearn digits (1797 images)",
                                                             "kind": "data set"}
        return reference_stats(self.reference, self.detector, device=self.cfg.device)

    def identity(self) -> dict:
        """What the scores depend on beyond the samples: the detector and the reference."""
        return {"detector": self.detector.sha256, "reference": str(self.reference or "sklearn digits")}


def _scheduler_config(model_id: str) -> dict | None:
    """The noise schedule published with a diffusers UNet repository (``scheduler_config.json``), if any."""
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - no scheduler config beside the UNet: the DDPM default is used
        return None


def run_fid(cfg: FIDConfig, on_shard: Callable[[MethodSpec, int, int], None] | None = None) -> list[dict]:
    """Sample every missing shard, then compute one Fréchet distance per (method, budget); see the module docstring.

    ``on_shard(spec, calls, k)`` is called after each newly written shard (tests use it to interrupt a run).
    Returns the result rows, also written to ``results.csv`` / ``results.json`` in ``cfg.out_dir``.
    """
    from accelerate import Accelerator

    check_writable(cfg.out_dir, f"to the output folder {cfg.out_dir}")
    accelerator = Accelerator(cpu=torch.device(cfg.device).type == "cpu")
    profile = _Profile(cfg)
    reference, reference_description = profile.reference_stats() if accelerator.is_main_process else (None, None)
    code = _code_version()
    if accelerator.is_main_process:
        _check_manifest(cfg, {**fingerprint(cfg, profile.model_id), **profile.identity()})
    accelerator.wait_for_everyone()
    jobs = [(spec, calls, k) for spec in cfg.methods for calls in cfg.budgets for k in range(cfg.num_shards)]
    mine = [job for i, job in enumerate(jobs) if i % accelerator.num_processes == accelerator.process_index]
    todo = []
    for spec, calls, k in mine:
        path = _shard_path(cfg, spec, calls, k)
        if path.exists():
            try:
                _read_shard(path, _shard_metadata(cfg, spec, calls, k, profile.shape, code))
                continue
            except ShardError as error:
                warnings.warn(f"sampling a bad shard again: {error}", UserWarning, stacklevel=2)
        todo.append((spec, calls, k))
    seconds: dict[tuple[str, int], float] = {}
    bar = tqdm(total=len(todo), desc="FID samples (shards)", disable=not (cfg.progress and accelerator.is_main_process))
    for spec, calls, k in todo:
        batch = min(cfg.batch_size, cfg.num_samples - k * cfg.batch_size)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        noise = torch.randn((batch, *profile.shape), generator=gen).to(cfg.device)
        eps_model, schedule = profile.model_for(spec)
        model = CountingModel(eps_model)
        steps = steps_for_budget(spec.method, calls)
        start = time.perf_counter()
        out = sample(model, noise * schedule.init_noise_sigma(steps), schedule, steps, spec.method, **spec.options)
        seconds[(str(spec), calls)] = seconds.get((str(spec), calls), 0.0) + time.perf_counter() - start
        metadata = _shard_metadata(cfg, spec, calls, k, profile.shape, code)
        _write_shard(_shard_path(cfg, spec, calls, k), to_uint8(out), {**metadata, "calls": str(model.calls)})
        bar.update(1)
        if on_shard is not None:
            on_shard(spec, calls, k)
    bar.close()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return []
    return _score(cfg, profile, reference, reference_description, seconds, code)


def _score(cfg: FIDConfig, profile: _Profile, reference: dict, reference_description: dict, seconds: dict,
           code: str) -> list[dict]:
    rows = []
    for spec in cfg.methods:
        for calls in cfg.budgets:
            stats, used_calls = FeatureStats(profile.detector.dim), set()
            for k in range(cfg.num_shards):
                images, meta = _read_shard(_shard_path(cfg, spec, calls, k),
                                           _shard_metadata(cfg, spec, calls, k, profile.shape, code))
                stats.update(profile.detector(images.to(cfg.device)))
                used_calls.add(int(meta["calls"]))
            if len(used_calls) != 1:
                raise ShardError(f"the shards of {spec} at {calls} calls used different numbers of network calls "
                                 f"{sorted(used_calls)}")
            edm = bool(profile.edm) and spec.method in ("heun", "bdia-edm")
            weights = standins.weights_label(cfg.edm_model) if edm else profile.weights
            rows.append({"profile": cfg.profile, "method": str(spec), "label": spec.label, "budget": calls,
                         "steps": steps_for_budget(spec.method, calls), "calls": used_calls.pop(),
                         "num_samples": cfg.num_samples, "fid": stats.fid(reference),
                         "model": Path(cfg.edm_model).name if edm else profile.model_id, "weights": weights,
                         "features": profile.detector.name, "detector_weights": profile.detector.weights,
                         "detector_sha256": profile.detector.sha256, "reference": reference_description["reference"],
                         "seed": cfg.seed, "sampling_seconds_this_run": round(seconds.get((str(spec), calls), 0.0), 2)})
    with open(cfg.out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = {"config": _config_record(cfg), "reference": reference_description, "results": rows}
    (cfg.out_dir / "results.json").write_text(json.dumps(record, indent=2))
    return rows


def _config_record(cfg: FIDConfig) -> dict:
    record = asdict(cfg)
    record["out_dir"] = str(cfg.out_dir)
    record["methods"] = [str(m) for m in cfg.methods]
    return record


def read_results(out_dir) -> list[dict]:
    """The result rows of a finished run (``results.json``)."""
    return json.loads((Path(out_dir) / "results.json").read_text())["results"]
