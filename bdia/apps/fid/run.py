"""An FID run that survives interruption: sample every missing shard, then score each (method, budget).

:func:`run_fid` samples ``num_samples`` images per (method, network-call budget) into the shard store
(:mod:`bdia.apps.fid.shards`). Shard ``k`` always starts from the same noise (seeded by ``seed`` and ``k``),
the same for every method, so comparisons are paired and a resumed run equals an uninterrupted one.
Shards are spread over processes with Hugging Face ``accelerate`` (``accelerate launch -m bdia fid ...``);
the main process scores them with the profile's detector against its reference
(:mod:`bdia.apps.fid.features`, :mod:`bdia.apps.fid.references`).

Everything a run needs (model, detector, reference, optional packages, a writable output folder) is
resolved before the first sample (:class:`FIDSetup`), and a missing piece is named with the way to get it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ...errors import InvalidValueError, MissingFileError, MissingPackageError
from ...methods import MethodSpec, parse_methods
from ...models import CountingModel, eps_model_from_denoiser
from ...samplers import sample
from ...schedules import EDMSchedule, VPSchedule
from .. import standins
from ..files import check_writable, code_digest, sha256_file
from .features import FeatureStats, digit_detector, image_stats, load_detector, to_uint8
from .profiles import PROFILES
from .references import reference_stats
from .shards import ShardError, check_manifest, read_shard, shard_metadata, shard_path, write_shard

__all__ = ["FIDConfig", "FIDSetup", "run_fid", "score_shards", "read_results", "fingerprint", "fingerprinted_dir",
           "default_model_id", "config_record", "load_edm_denoiser"]


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
            raise InvalidValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")
        self.methods = parse_methods(self.methods)
        if not self.methods:
            raise InvalidValueError("no methods given")
        for name, value, least in (("num_samples", self.num_samples, 2), ("batch_size", self.batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise InvalidValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not self.budgets:
            raise InvalidValueError("no network-call budgets given")
        for calls in self.budgets:
            if isinstance(calls, bool) or not isinstance(calls, (int, np.integer)) or calls < 1:
                raise InvalidValueError(f"a budget must be a positive integer number of network calls, got {calls!r}")
        for spec in self.methods:
            for calls in self.budgets:
                spec.record.steps_for_budget(calls)
        if not PROFILES[self.profile].custom_scoring and (self.detector or self.reference):
            raise InvalidValueError("the ci profile scores with the shipped digit classifier against sklearn's digits; "
                                    "--detector and --reference belong to the paper profile")

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.batch_size)


def config_record(cfg: FIDConfig) -> dict:
    """A config as JSON-ready values (``FIDConfig(**config_record(cfg))`` rebuilds it)."""
    record = asdict(cfg)
    record["out_dir"] = str(cfg.out_dir)
    record["methods"] = [str(m) for m in cfg.methods]
    return record


def default_model_id(cfg: FIDConfig) -> str:
    """The model a config uses: ``cfg.model``, else the profile's (the shipped digits model, or a hub id)."""
    if cfg.model:
        return str(cfg.model)
    model = PROFILES[cfg.profile].model
    if model is None:
        from ..digits import shipped_model_path

        return str(shipped_model_path())
    return model


def _model_identity(model_id: str) -> tuple[str, str]:
    """``(name, hash)`` of a model: the sha256 of a local folder's weights, else the hub id."""
    path = Path(model_id)
    weights = sorted(path.rglob("*.safetensors")) if path.is_dir() else []
    if weights:
        return path.name, hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()
    return model_id, model_id


def fingerprint(cfg: FIDConfig, model_id: str) -> dict:
    """What the samples in an output folder depend on: the package's code, model weights, EDM checkpoint, seed,
    sizes."""
    name, model_hash = _model_identity(model_id)
    edm = None
    if cfg.edm_model:
        edm_path = Path(cfg.edm_model)
        edm = {"name": edm_path.name, "sha256": sha256_file(edm_path) if edm_path.is_file() else None}
    return {"code": code_digest(), "model": name, "model_hash": model_hash, "edm_model": edm, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "num_samples": cfg.num_samples, "profile": cfg.profile}


def fingerprinted_dir(root, cfg: FIDConfig) -> Path:
    """``root/<profile>-<hash>``: a folder that only runs with the same code, model and sizes share."""
    digest = hashlib.sha256(json.dumps(fingerprint(cfg, default_model_id(cfg)), sort_keys=True).encode()).hexdigest()
    return Path(root) / f"{cfg.profile}-{digest[:12]}"


def load_edm_denoiser(path, device="cpu"):
    """An EDM denoiser ``D(x, sigma)`` and its image shape from an NVlabs EDM checkpoint (``edm-*.pkl``).

    The checkpoints are pickles of NVlabs' network classes: their repository's ``dnnlib`` and
    ``torch_utils`` must be importable, and, as with any pickle, load only files you trust.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no EDM checkpoint at {path}; download one of NVlabs' edm-cifar10-32x32-*.pkl files "
                               "first")
    with open(path, "rb") as f:
        try:
            data = pickle.load(f)
        except ModuleNotFoundError as error:
            raise MissingPackageError(f"{path.name} needs NVlabs' EDM code (dnnlib, torch_utils) on the Python path "
                                      f"to unpickle: {error}") from error
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
            raise InvalidValueError(f"{path} is not an EDM checkpoint (a pickle with an 'ema' network): {error}") \
                from error
    if not isinstance(data, dict) or "ema" not in data:
        raise InvalidValueError(f"{path} is not an EDM checkpoint: it holds no 'ema' network")
    net = data["ema"].to(device).eval()

    @torch.no_grad()
    def denoiser(x: Tensor, sigma) -> Tensor:
        sig = torch.full((x.shape[0],), float(sigma), device=x.device)
        return net(x.to(torch.float32), sig).to(x.dtype)

    return denoiser, (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))


#: DDPM's linear schedule as a diffusers config (the default of a scheduler config without betas)
_DDPM_CONFIG = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def _scheduler_config(model_id: str) -> dict | None:
    """The noise schedule published with a diffusers UNet repository (``scheduler_config.json``), if any."""
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - no scheduler config beside the UNet: the DDPM default is used
        return None


class FIDSetup:
    """A profile resolved for a config before any sampling: the model and its schedule, the sample shape, an EDM
    checkpoint for the EDM family when one is given, the detector and the reference."""

    def __init__(self, cfg: FIDConfig):
        from ...diffusers import UNetEpsModel, load_unet

        profile = PROFILES[cfg.profile]
        self.cfg = cfg
        self.model_id = default_model_id(cfg)
        unet = load_unet(self.model_id, device=cfg.device)
        if profile.schedule_from_model:
            config = _scheduler_config(self.model_id) or _DDPM_CONFIG
            self.schedule = VPSchedule.from_diffusers_config(config)
        else:
            config, self.schedule = None, VPSchedule.ddpm()
        labels = None
        if profile.null_label:  # every sample with the null label: unconditional, like the CIFAR10 DDPM's
            from ..digits import NULL_CLASS

            labels = torch.tensor([NULL_CLASS], device=cfg.device)
        # the FID samplers take the network's eps as it is: no clipping of x0 (chapter 4 says so)
        self.eps_model = UNetEpsModel(unet, class_labels=labels, scheduler_config=config, follow_clipping=False)
        self.weights = standins.weights_label(self.model_id)
        self.shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.edm = None  # (eps model, schedule) for the EDM family, when an EDM checkpoint is given
        if cfg.edm_model:
            denoiser, shape = load_edm_denoiser(cfg.edm_model, device=cfg.device)
            if shape != self.shape:
                raise InvalidValueError(f"the EDM model makes {shape} images, the DDPM {self.shape}")
            self.edm = (eps_model_from_denoiser(denoiser, EDMSchedule()), EDMSchedule())
        if profile.detector == "digit-classifier":
            self.detector = digit_detector()
        else:
            self.detector = load_detector(cfg.detector, device=cfg.device)
        self.reference = cfg.reference or profile.reference

    def model_for(self, spec: MethodSpec):
        """The model and schedule a method samples with: for the EDM family, EDM's checkpoint and grid when there is
        one, else the DDPM on EDM's grid; for the DDIM family, the DDPM on its own grid."""
        if spec.record.family == "edm":
            return self.edm or (self.eps_model, self.schedule.with_spacing("karras"))
        return self.eps_model, self.schedule

    def reference_stats(self) -> tuple[dict, dict]:
        if self.reference is None:  # all of sklearn's digits
            from ..digits import load_digits_images

            images, _ = load_digits_images()
            stats = image_stats(self.detector, [to_uint8(images)])
            return {"mu": stats.mu, "sigma": stats.sigma}, {"reference": "sklearn digits (1797 images)",
                                                             "kind": "data set"}
        return reference_stats(self.reference, self.detector, device=self.cfg.device)

    def identity(self) -> dict:
        """What the scores depend on beyond the samples: the detector and the reference."""
        return {"detector": self.detector.sha256, "reference": str(self.reference or "sklearn digits")}


def run_fid(cfg: FIDConfig, on_shard: Callable[[MethodSpec, int, int], None] | None = None) -> list[dict]:
    """Sample every missing shard, then compute one Fréchet distance per (method, budget); see the module docstring.

    ``on_shard(spec, calls, k)`` is called after each newly written shard (tests use it to interrupt a run).
    Returns the result rows, also written to ``results.csv`` / ``results.json`` in ``cfg.out_dir``.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    check_writable(cfg.out_dir, f"to the output folder {cfg.out_dir}")
    accelerator = Accelerator(cpu=torch.device(cfg.device).type == "cpu")
    setup = FIDSetup(cfg)
    reference, reference_description = setup.reference_stats() if accelerator.is_main_process else (None, None)
    code = code_digest()
    if accelerator.is_main_process:
        check_manifest(cfg.out_dir, {**fingerprint(cfg, setup.model_id), **setup.identity()})
    accelerator.wait_for_everyone()
    jobs = [(spec, calls, k) for spec in cfg.methods for calls in cfg.budgets for k in range(cfg.num_shards)]
    mine = [job for i, job in enumerate(jobs) if i % accelerator.num_processes == accelerator.process_index]
    todo = []
    for spec, calls, k in mine:
        path = shard_path(cfg.out_dir, spec, calls, k)
        if path.exists():
            try:
                read_shard(path, shard_metadata(cfg, spec, calls, k, setup.shape, code))
                continue
            except ShardError as error:
                warnings.warn(f"sampling a bad shard again: {error}", UserWarning, stacklevel=2)
        todo.append((spec, calls, k))
    seconds: dict[tuple[str, int], float] = {}
    bar = tqdm(total=len(todo), desc="FID samples (shards)", disable=not (cfg.progress and accelerator.is_main_process))
    for spec, calls, k in todo:
        batch = min(cfg.batch_size, cfg.num_samples - k * cfg.batch_size)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        noise = torch.randn((batch, *setup.shape), generator=gen).to(cfg.device)
        eps_model, schedule = setup.model_for(spec)
        model = CountingModel(eps_model)
        steps = spec.record.steps_for_budget(calls)
        start = time.perf_counter()
        out = sample(model, noise * schedule.init_noise_sigma(steps), schedule, steps, spec.method, **spec.options)
        seconds[(str(spec), calls)] = seconds.get((str(spec), calls), 0.0) + time.perf_counter() - start
        metadata = shard_metadata(cfg, spec, calls, k, setup.shape, code)
        write_shard(shard_path(cfg.out_dir, spec, calls, k), to_uint8(out), {**metadata, "calls": str(model.calls)})
        bar.update(1)
        if on_shard is not None:
            on_shard(spec, calls, k)
    bar.close()
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return []
    return score_shards(cfg, setup, reference, reference_description, seconds, code)


def score_shards(cfg: FIDConfig, setup: FIDSetup, reference: dict, reference_description: dict, seconds: dict,
                 code: str) -> list[dict]:
    """Score every (method, budget) of a finished run from its shards; writes ``results.csv`` and ``results.json``."""
    rows = []
    for spec in cfg.methods:
        for calls in cfg.budgets:
            stats, used_calls = FeatureStats(setup.detector.dim), set()
            for k in range(cfg.num_shards):
                images, meta = read_shard(shard_path(cfg.out_dir, spec, calls, k),
                                          shard_metadata(cfg, spec, calls, k, setup.shape, code))
                stats.update(setup.detector(images.to(cfg.device)))
                used_calls.add(int(meta["calls"]))
            if len(used_calls) != 1:
                raise ShardError(f"the shards of {spec} at {calls} calls used different numbers of network calls "
                                 f"{sorted(used_calls)}")
            edm = bool(setup.edm) and spec.record.family == "edm"
            weights = standins.weights_label(cfg.edm_model) if edm else setup.weights
            rows.append({"profile": cfg.profile, "method": str(spec), "label": spec.label, "budget": calls,
                         "steps": spec.record.steps_for_budget(calls), "calls": used_calls.pop(),
                         "num_samples": cfg.num_samples, "fid": stats.fid(reference),
                         "model": Path(cfg.edm_model).name if edm else setup.model_id, "weights": weights,
                         "features": setup.detector.name, "detector_weights": setup.detector.weights,
                         "detector_sha256": setup.detector.sha256, "reference": reference_description["reference"],
                         "seed": cfg.seed, "sampling_seconds_this_run": round(seconds.get((str(spec), calls), 0.0), 2)})
    with open(cfg.out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = {"config": config_record(cfg), "reference": reference_description, "results": rows}
    (cfg.out_dir / "results.json").write_text(json.dumps(record, indent=2))
    return rows


def read_results(out_dir) -> list[dict]:
    """The result rows of a finished run (``results.json``)."""
    return json.loads((Path(out_dir) / "results.json").read_text())["results"]
