"""Image features and their statistics, computed the way NVlabs' EDM computes FID.

Scores follow EDM's ``fid.py``: features of uint8 images from a fixed detector, their mean and covariance
accumulated in float64 (:class:`FeatureStats`), and the Fréchet distance
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (:func:`frechet_distance`). Two detectors:

* :func:`digit_detector` (``ci`` profile): the 64-d penultimate layer of the digit classifier shipped with
  bdia, evaluated in float64;
* :func:`load_detector` (``paper`` profile): the TorchScript translation of TF-FID's Inception-v3 that
  NVlabs' metrics use (2048-d), loaded with PyTorch alone.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import InvalidTypeError, InvalidValueError, MissingFileError, MissingPackageError, ModelNotAvailableError
from .. import standins
from ..files import sha256_file
from ..published import DETECTOR_FILE

__all__ = ["frechet_distance", "FeatureStats", "DigitFeatures", "Detector", "image_stats", "digit_detector",
           "digit_sample_scores", "load_detector", "to_uint8", "real_subset_spread", "DETECTOR_URL", "DETECTOR_FILE"]

#: NVlabs' TorchScript translation of TF-FID's Inception-v3 (stylegan2-ada-pytorch's metrics); EDM's fid.py
#: loads the same network from a pickle (``inception-2015-12-05.pkl``), which needs NVlabs' code to unpickle
DETECTOR_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


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
            raise InvalidValueError(f"features of shape {f.shape}, expected (n, {len(self.total)})")
        if not np.isfinite(f).all():
            raise InvalidValueError("the detector returned non-finite features")
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    @property
    def mu(self) -> np.ndarray:
        return self.total / self.count

    @property
    def sigma(self) -> np.ndarray:
        if self.count < 2:
            raise InvalidValueError(f"need at least 2 images for a covariance, got {self.count}")
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
            raise InvalidTypeError(f"a detector takes uint8 images (n, C, H, W), got {images.dtype} {tuple(images.shape)}")
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
    from .. import digits

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
                raise MissingFileError(
                    f"the FID detector is not on this machine ({file}) and the network is off. Download "
                    f"{DETECTOR_URL} into {file.parent} (or set TORCH_HOME), pass --detector PATH, or for a dry run "
                    "write stand-ins with `python -m bdia standins --out DIR` and set TORCH_HOME=DIR/torch")
            file.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(DETECTOR_URL, str(file), progress=True)
            except Exception as error:  # noqa: BLE001 - urllib raises several kinds
                raise ModelNotAvailableError(f"could not download the FID detector from {DETECTOR_URL}: {error}") from error
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise MissingFileError(f"no FID detector at {file}")
    import zipfile

    if zipfile.is_zipfile(file):  # a TorchScript archive
        extra = {standins.MARKER: ""}
        try:
            network = torch.jit.load(str(file), map_location=device, _extra_files=extra).eval()
        except RuntimeError as error:
            raise InvalidValueError(f"{file} is not a TorchScript detector: {str(error).splitlines()[0]}") from error
        weights = standins.STANDIN_LABEL if extra[standins.MARKER] else standins.TRAINED_LABEL
    else:
        warnings.warn(f"unpickling {file}: a pickle runs code from the file; load only files you trust",
                      UserWarning, stacklevel=2)
        import pickle

        try:
            with open(file, "rb") as f:
                network = pickle.load(f).to(device).eval()
        except ModuleNotFoundError as error:
            raise MissingPackageError(f"{file.name} needs NVlabs' dnnlib and torch_utils on the Python path to unpickle "
                                      f"({error}); the TorchScript file {DETECTOR_URL} needs nothing but PyTorch") from error
        except (pickle.UnpicklingError, EOFError, AttributeError) as error:
            raise InvalidValueError(f"{file} is neither a TorchScript archive nor a readable pickle: {error}") from error
        weights = standins.TRAINED_LABEL
    detector = Detector("Inception-v3 (TF-FID, NVlabs' TorchScript), 2048-d pool features", network, 2048,
                        sha256_file(file), weights, 3, {"return_features": True})
    probe = detector(torch.zeros(1, 3, 32, 32, dtype=torch.uint8, device=device))
    if probe.shape != (1, 2048):
        raise InvalidValueError(f"{file} returns features of shape {tuple(probe.shape[1:])}, not 2048-d: not an FID detector")
    return detector


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


def _digit_feature_stats(images: Tensor, classifier) -> FeatureStats:
    """The digit classifier's feature statistics of images in [-1, 1], rounded to 8 bits as a saved image would be."""
    import copy

    features = DigitFeatures(copy.deepcopy(classifier))  # it computes in float64; the caller's stays as it is
    stats = FeatureStats(features.num_features)
    stats.update(features(to_uint8(images.detach().cpu().float())))
    return stats


def digit_sample_scores(samples: Tensor, labels: Tensor, classifier=None, reference: FeatureStats | None = None) -> dict:
    """How the shipped digit classifier (or ``classifier``) reads ``samples`` (``(n, 1, 8, 8)`` in [-1, 1]) drawn for
    ``labels``: the share it reads as their label, and the Fréchet distance of their features to those of all 1797
    real digits (chapter 4's measure, on 8-bit images; ``reference``: those statistics, from an earlier call's
    ``"reference"``, to skip recomputing them)."""
    from .. import digits

    classifier = classifier if classifier is not None else digits.load_classifier()[0]
    generated = to_uint8(samples.detach().cpu().float()).float() / 127.5 - 1.0
    with torch.no_grad():
        agreement = (classifier(generated).argmax(-1) == labels.cpu()).float().mean().item()
    if reference is None:
        reference = _digit_feature_stats(digits.load_digits_images()[0], classifier)
    distance = _digit_feature_stats(generated, classifier).fid(reference)
    return {"read as their label": agreement, "frechet distance to the digits": distance,
            "num_samples": len(samples), "reference": reference}
