"""FID experiments that survive interruption: samples in shards, statistics with torchmetrics.

``run_fid`` samples ``num_samples`` images per (method, network-call budget), writes them as shards of
``batch_size`` uint8 images (``samples/<method>/calls<NNN>/shard_<KKKKK>.safetensors``, each written
to a temporary file and renamed, so a shard on disk is always complete), and skips every shard that
already exists when it is run again. Shard ``k`` always starts from the same noise (seeded by ``seed``
and ``k``), the same for every method, so comparisons are paired and a resumed run equals an
uninterrupted one. Shards are spread over processes with Hugging Face ``accelerate``
(``accelerate launch -m bdia fid ...``); the main process computes the Fréchet distances with
``torchmetrics.image.fid.FrechetInceptionDistance`` and writes ``results.csv`` and ``results.json``.

Profiles:

* ``paper``: ``google/ddpm-cifar10-32`` (unconditional DDPM), 3x32x32 images; with ``edm_model``, Heun
  and BDIA-EDM run on an NVlabs EDM checkpoint instead (:func:`load_edm_denoiser`), else on the DDPM
  in EDM's variables; torchmetrics' default 2048-d InceptionV3 features (torch-fidelity's port of the TF-FID network, the one the FID literature
  uses), reference statistics from the 50,000 CIFAR10 training images (Hugging Face ``datasets``).
* ``ci``: the digits DDPM shipped with bdia, sampled unconditionally, 1x8x8 images; the Fréchet
  distance in the 64-d feature space of :class:`bdia.digits.DigitClassifier` (trained, seeded, on first
  use and stored in the output folder); reference: all 1797 digits. These are digits, not CIFAR10.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .experiments import MethodSpec, parse_methods
from .models import CountingModel
from .samplers import sample
from .schedules import VPSchedule

__all__ = ["FIDConfig", "run_fid", "steps_for_budget", "frechet_distance", "DigitFeatures", "PROFILES",
           "read_results", "fingerprint", "fingerprinted_dir", "ManifestMismatchError", "load_edm_denoiser",
           "to_uint8", "digit_classifier", "real_subset_spread"]

PROFILES = ("ci", "paper")
PAPER_MODEL = "google/ddpm-cifar10-32"


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


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``, computed directly (scipy's sqrtm), for cross-checks."""
    from scipy import linalg

    covmean = linalg.sqrtm(cov1 @ cov2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * covmean))


class DigitFeatures(nn.Module):
    """uint8 digit images ``(n, 1, 8, 8)`` to the 64-d penultimate features of a :class:`~bdia.digits.DigitClassifier`."""

    num_features = 64

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float() / 127.5 - 1.0)


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
            net = pickle.load(f)["ema"]
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"{path.name} needs NVlabs' EDM code (dnnlib, torch_utils) on the Python path "
                                      f"to unpickle: {error}") from error
    net = net.to(device).eval()

    @torch.no_grad()
    def denoiser(x: Tensor, sigma) -> Tensor:
        sig = torch.full((x.shape[0],), float(sigma), device=x.device)
        return net(x.to(torch.float32), sig).to(x.dtype)

    return denoiser, (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))


@dataclass
class FIDConfig:
    """What :func:`run_fid` computes; ``model=None`` picks the profile's model."""

    out_dir: Path
    profile: str = "ci"
    methods: list = field(default_factory=lambda: ["ddim", "bdia:gamma=0.5"])
    budgets: list = field(default_factory=lambda: [10, 20])
    num_samples: int = 2000
    batch_size: int = 500
    seed: int = 0
    model: str | None = None
    edm_model: str | None = None
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")
        self.methods = parse_methods(self.methods)
        if self.num_samples < 2 or self.batch_size < 1:
            raise ValueError("need num_samples >= 2 and batch_size >= 1")
        for spec in self.methods:
            for calls in self.budgets:
                steps_for_budget(spec.method, calls)

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.batch_size)


class ManifestMismatchError(ValueError):
    """An output folder holds shards made with another model, seed, batch size or version of the samplers."""


_CODE_FILES = ("samplers.py", "steps.py", "schedules.py", "fid.py", "diffusers/models.py")


def _hash_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(cfg: "FIDConfig", model_id: str) -> dict:
    """What the shards in an output folder depend on: sampler code, model weights, seed, sizes."""
    import hashlib

    root = Path(__file__).parent
    code = hashlib.sha256("".join(_hash_file(root / f) for f in _CODE_FILES).encode()).hexdigest()
    model_path = Path(model_id)
    weights = sorted(model_path.glob("*.safetensors")) if model_path.is_dir() else []
    model_hash = hashlib.sha256("".join(_hash_file(w) for w in weights).encode()).hexdigest() if weights else model_id
    edm = Path(cfg.edm_model).name if cfg.edm_model else None
    return {"code": code, "model": model_id if not weights else model_path.name, "model_hash": model_hash,
            "edm_model": edm, "seed": cfg.seed, "batch_size": cfg.batch_size, "num_samples": cfg.num_samples,
            "profile": cfg.profile}


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
    import hashlib

    digest = hashlib.sha256(json.dumps(fingerprint(cfg, default_model_id(cfg)), sort_keys=True).encode()).hexdigest()
    return Path(root) / f"{cfg.profile}-{digest[:12]}"


def _check_manifest(cfg: "FIDConfig", expected: dict) -> None:
    path = cfg.out_dir / "manifest.json"
    if path.exists():
        found = json.loads(path.read_text())
        diff = sorted(k for k in expected if found.get(k) != expected[k])
        if diff:
            raise ManifestMismatchError(
                f"{cfg.out_dir} holds shards made with a different {', '.join(diff)} (see manifest.json); resuming "
                "would mix them. Use a new output folder, or delete this one to start over.")
    else:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(expected, indent=2))


def _slug(spec: MethodSpec) -> str:
    return str(spec).replace(":", "_").replace("=", "").replace(",", "_")


def _shard_path(cfg: FIDConfig, spec: MethodSpec, calls: int, k: int) -> Path:
    return cfg.out_dir / "samples" / _slug(spec) / f"calls{calls:03d}" / f"shard_{k:05d}.safetensors"


def _write_atomic(path: Path, images: Tensor, metadata: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"images": images.contiguous()}, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def _load_shard(path: Path) -> Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["images"]


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] as uint8 in [0, 255] (clamped and rounded), as FID implementations expect."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


class _Profile:
    """Model, sample shape, features and reference images of a profile."""

    def __init__(self, cfg: FIDConfig):
        from .diffusers import UNetEpsModel, load_unet

        self.cfg = cfg
        self.schedule = VPSchedule.ddpm()
        self.model_id = default_model_id(cfg)
        if cfg.profile == "ci":
            from . import digits

            unet = load_unet(self.model_id, device=cfg.device)
            # the null label for every sample: unconditional samples, like the CIFAR10 DDPM's
            self.eps_model = UNetEpsModel(unet, class_labels=torch.tensor([digits.NULL_CLASS], device=cfg.device))
            self.features_name = "digit classifier, 64-d penultimate features"
        else:
            self.eps_model = UNetEpsModel(load_unet(self.model_id, device=cfg.device))
            self.features_name = "InceptionV3 (torch-fidelity/TF-FID weights), 2048-d pool features"
            unet = self.eps_model.network
        self.shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.edm = None  # (eps model, schedule) for Heun and BDIA-EDM, when an EDM checkpoint is given
        if cfg.edm_model:
            from .models import eps_model_from_denoiser
            from .schedules import EDMSchedule

            denoiser, shape = load_edm_denoiser(cfg.edm_model, device=cfg.device)
            if shape != self.shape:
                raise ValueError(f"the EDM model makes {shape} images, the DDPM {self.shape}")
            self.edm = (eps_model_from_denoiser(denoiser, EDMSchedule()), EDMSchedule())

    def model_for(self, spec: MethodSpec):
        """The model and schedule a method samples with: EDM's checkpoint and grid for Heun and BDIA-EDM when
        there is one, else the DDPM (on EDM's grid for those two, on the uniform grid for the DDIM family)."""
        if spec.method in ("heun", "bdia-edm"):
            return self.edm or (self.eps_model, self.schedule.with_spacing("karras"))
        return self.eps_model, self.schedule

    def metric(self):
        from torchmetrics.image.fid import FrechetInceptionDistance

        if self.cfg.profile == "ci":
            return FrechetInceptionDistance(feature=DigitFeatures(self._classifier()), reset_real_features=False)
        try:
            return FrechetInceptionDistance(feature=2048, reset_real_features=False)
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError("the paper profile's FID needs torch-fidelity (pip install torch-fidelity, "
                                      "with a torchvision matching your torch)") from error

    def _classifier(self):
        return digit_classifier(self.cfg.out_dir, self.cfg.seed)[0]

    def reference_images(self):
        """Yields uint8 batches of the reference set."""
        if self.cfg.profile == "ci":
            from . import digits

            images, _ = digits.load_digits_images()
            yield to_uint8(images)
            return
        try:
            from datasets import load_dataset

            data = load_dataset("uoft-cs/cifar10", split="train")
        except Exception as error:  # noqa: BLE001
            raise OSError("the paper profile needs the CIFAR10 training set from the Hugging Face hub "
                          "(pip install datasets; internet access); the ci profile uses sklearn's digits") from error
        for start in range(0, len(data), 1000):
            chunk = data[start:start + 1000]["img"]
            yield torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in chunk])


def digit_classifier(folder, seed: int = 0):
    """``(classifier, test accuracy)``: trained (seeded) on first use and stored in ``folder``, loaded after that."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from . import digits

    path = Path(folder) / "digit_classifier.safetensors"
    if not path.exists():
        model, accuracy = digits.train_classifier(seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(path), metadata={"test_accuracy": f"{accuracy:.4f}"})
    model = digits.DigitClassifier()
    with safe_open(str(path), "pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
        accuracy = float(f.metadata()["test_accuracy"])
    return model.eval(), accuracy


def real_subset_spread(metric, real: Tensor, num_samples: int, seed: int = 0, repeats: int = 10):
    """Mean and sd of the Fréchet distance of ``repeats`` random real subsets of ``num_samples`` images.

    ``metric`` must already hold the real features (``reset_real_features=False``); its fake features are
    reset. The spread says which differences between samplers are sampling noise.
    """
    values = []
    for k in range(repeats):
        idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed + k))[:num_samples]
        metric.reset()
        metric.update(real[idx], real=False)
        values.append(float(metric.compute()))
    metric.reset()
    return float(np.mean(values)), float(np.std(values))


def run_fid(cfg: FIDConfig, on_shard: Callable[[MethodSpec, int, int], None] | None = None) -> list[dict]:
    """Sample every missing shard, then compute one Fréchet distance per (method, budget); see the module docstring.

    ``on_shard(spec, calls, k)`` is called after each newly written shard (tests use it to interrupt a run).
    Returns the result rows, also written to ``results.csv`` / ``results.json`` in ``cfg.out_dir``.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=cfg.device == "cpu")
    profile = _Profile(cfg)
    if accelerator.is_main_process:
        _check_manifest(cfg, fingerprint(cfg, profile.model_id))
    accelerator.wait_for_everyone()
    jobs = [(spec, calls, k) for spec in cfg.methods for calls in cfg.budgets for k in range(cfg.num_shards)]
    mine = [job for i, job in enumerate(jobs) if i % accelerator.num_processes == accelerator.process_index]
    todo = [job for job in mine if not _shard_path(cfg, *job).exists()]
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
        _write_atomic(_shard_path(cfg, spec, calls, k), to_uint8(out),
                      {"method": spec, "steps": steps, "calls": model.calls, "seed": cfg.seed, "shard": k})
        bar.update(1)
        if on_shard is not None:
            on_shard(spec, calls, k)
    bar.close()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return []
    return _score(cfg, profile, seconds)


def _score(cfg: FIDConfig, profile: _Profile, seconds: dict) -> list[dict]:
    from safetensors import safe_open

    metric = profile.metric()
    for images in profile.reference_images():
        metric.update(images, real=True)
    rows = []
    for spec in cfg.methods:
        for calls in cfg.budgets:
            metric.reset()
            paths = [_shard_path(cfg, spec, calls, k) for k in range(cfg.num_shards)]
            for path in paths:
                metric.update(_load_shard(path), real=False)
            with safe_open(str(paths[0]), "pt") as f:
                used_calls = int(f.metadata()["calls"])
            rows.append({"profile": cfg.profile, "method": str(spec), "label": spec.label, "budget": calls,
                         "steps": steps_for_budget(spec.method, calls), "calls": used_calls,
                         "num_samples": cfg.num_samples, "fid": float(metric.compute()), "model": profile.model_id,
                         "features": profile.features_name, "seed": cfg.seed,
                         "sampling_seconds_this_run": round(seconds.get((str(spec), calls), 0.0), 2)})
    with open(cfg.out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (cfg.out_dir / "results.json").write_text(json.dumps({"config": _config_record(cfg), "results": rows}, indent=2))
    return rows


def _config_record(cfg: FIDConfig) -> dict:
    record = asdict(cfg)
    record["out_dir"] = str(cfg.out_dir)
    record["methods"] = [str(m) for m in cfg.methods]
    return record


def read_results(out_dir) -> list[dict]:
    """The result rows of a finished run (``results.json``)."""
    return json.loads((Path(out_dir) / "results.json").read_text())["results"]
