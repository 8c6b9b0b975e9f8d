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
from .. import labels
from ..files import check_writable, code_digest, sha256_file
from .features import FeatureStats, digit_detector, image_stats, load_detector, to_uint8
from .profiles import PROFILES
from .references import reference_stats
from .shards import ShardError, check_manifest, read_shard, shard_metadata, shard_path, write_shard

__all__ = ["FIDConfig", "FIDSetup", "run_fid", "score_shards", "read_results", "fingerprint", "fingerprinted_dir",
           "default_model_id", "config_record", "EDMNetwork", "load_edm_network", "model_folder", "model_identity",
           "WEIGHT_PATTERNS"]


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
    #: limit x0 as the model's scheduler config says (``clip_sample``, thresholding) in the DDIM-family samplers;
    #: off by default, as EDM's and the paper's samplers (the EDM family never clips)
    follow_clipping: bool = False

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


#: the files that hold a model's weights, in every format a model folder may use
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pkl", "*.pt", "*.pth", "*.ckpt")


def model_folder(model_id: str) -> Path | None:
    """The folder holding a model: a local path, or its snapshot in the Hugging Face cache (downloaded if it is not
    there yet and the hub can be reached); None when neither exists."""
    path = Path(model_id)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model_id, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached yet: fetch it, as loading it would
            return Path(snapshot_download(model_id))
    except Exception:  # noqa: BLE001 - not a hub id, or offline without a cached copy
        return None


def model_identity(model_id: str) -> dict:
    """What identifies a model's weights: its name, the sha256 of every weight file (safetensors, pickles, checkpoints:
    the content, whatever the format) and whether they are stand-ins."""
    folder = model_folder(model_id)
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in folder.rglob(pattern)}) if folder else []
    if not files:
        raise MissingFileError(f"no weights of {model_id} found (looked for {', '.join(WEIGHT_PATTERNS)}); an FID run "
                               "pins the model it samples by the content of its weights")
    digest = hashlib.sha256("".join(f"{f.relative_to(folder)}:{sha256_file(f)}" for f in files).encode()).hexdigest()
    return {"name": Path(model_id).name if Path(model_id).is_dir() else model_id, "sha256": digest,
            "weights": labels.weights_label(model_id)}


def fingerprint(cfg: FIDConfig, model_id: str) -> dict:
    """What the samples in an output folder depend on: the package's code, the model's and EDM checkpoint's weights
    (by content, stand-ins named), the seed, the sizes and the clipping."""
    edm = None
    if cfg.edm_model:
        edm_path = Path(cfg.edm_model)
        edm = {"name": edm_path.name, "sha256": sha256_file(edm_path) if edm_path.is_file() else None,
               "weights": labels.weights_label(edm_path)}
    return {"code": code_digest(), "model": model_identity(model_id), "edm_model": edm, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "num_samples": cfg.num_samples, "profile": cfg.profile,
            "follow_clipping": cfg.follow_clipping}


def fingerprinted_dir(root, cfg: FIDConfig) -> Path:
    """``root/<profile>-<hash>``: a folder that only runs with the same code, model and sizes share."""
    digest = hashlib.sha256(json.dumps(fingerprint(cfg, default_model_id(cfg)), sort_keys=True).encode()).hexdigest()
    return Path(root) / f"{cfg.profile}-{digest[:12]}"


@dataclass
class EDMNetwork:
    """An NVlabs EDM checkpoint's network: its image shape, its number of classes (``label_dim``, 0 when
    unconditional) and :meth:`denoiser`, ``D(x, sigma)`` for given one-hot class labels."""

    net: object
    shape: tuple
    label_dim: int

    def labels(self, batch: int, generator: torch.Generator, device) -> Tensor | None:
        """Class labels for a batch as EDM's ``generate.py`` draws them (uniform, one-hot); None when unconditional."""
        if not self.label_dim:
            return None
        index = torch.randint(self.label_dim, (batch,), generator=generator)
        return torch.eye(self.label_dim, device=device)[index.to(device)]

    def denoiser(self, class_labels: Tensor | None = None):
        """``D(x, sigma)`` of the network, conditioned on ``class_labels`` (one row per sample) when given."""
        net = self.net

        @torch.no_grad()
        def denoise(x: Tensor, sigma) -> Tensor:
            sig = torch.full((x.shape[0],), float(sigma), device=x.device)
            labels = None if class_labels is None else class_labels[: x.shape[0]]
            return net(x.to(torch.float32), sig, labels).to(x.dtype)

        return denoise


def load_edm_network(path, device="cpu") -> EDMNetwork:
    """The network of an NVlabs EDM checkpoint (``edm-*.pkl``), with its class count for conditional ones.

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
    shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
    return EDMNetwork(net, shape, int(getattr(net, "label_dim", 0) or 0))


class FIDSetup:
    """A profile resolved for a config before any sampling: the model and its schedule (read from the model's own
    scheduler config where the profile says so, never a default), the sample shape, an EDM checkpoint for the EDM
    family when one is given, the detector and the reference."""

    def __init__(self, cfg: FIDConfig):
        from ...diffusers import UNetEpsModel, load_scheduler_config, load_unet

        profile = PROFILES[cfg.profile]
        self.cfg = cfg
        self.model_id = default_model_id(cfg)
        unet = load_unet(self.model_id, device=cfg.device)
        config = load_scheduler_config(self.model_id) if profile.schedule_from_model else None
        self.schedule = VPSchedule.from_diffusers_config(config) if config else VPSchedule.ddpm()
        class_labels = None
        if profile.null_label:  # every sample with the null label: unconditional, like the CIFAR10 DDPM's
            from ..digits import NULL_CLASS

            class_labels = torch.tensor([NULL_CLASS], device=cfg.device)
        # the DDIM family limits x0 only on request (follow_clipping); the EDM family integrates eps and never does
        self.eps_model = UNetEpsModel(unet, class_labels=class_labels, scheduler_config=config,
                                      follow_clipping=cfg.follow_clipping)
        self.unclipped = UNetEpsModel(unet, class_labels=class_labels, scheduler_config=config, follow_clipping=False)
        self.clipping = self.eps_model.prediction.limits_x0
        self.weights = labels.weights_label(self.model_id)
        self.shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.edm = load_edm_network(cfg.edm_model, device=cfg.device) if cfg.edm_model else None
        if self.edm is not None and self.edm.shape != self.shape:
            raise InvalidValueError(f"the EDM model makes {self.edm.shape} images, the DDPM {self.shape}")
        if profile.detector == "digit-classifier":
            self.detector = digit_detector()
        else:
            self.detector = load_detector(cfg.detector, device=cfg.device)
        self.reference = cfg.reference or profile.reference

    def model_for(self, spec: MethodSpec, class_labels: Tensor | None = None):
        """The model and schedule a method samples with: for the EDM family, EDM's checkpoint (with ``class_labels``
        for a conditional one) and grid when there is one, else the DDPM, unclipped, on EDM's grid; for the DDIM
        family, the DDPM on its own grid."""
        if spec.record.family == "edm":
            if self.edm is not None:
                return eps_model_from_denoiser(self.edm.denoiser(class_labels), EDMSchedule()), EDMSchedule()
            return self.unclipped, self.schedule.with_spacing("karras")
        return self.eps_model, self.schedule

    def labels_note(self, spec: MethodSpec) -> str:
        """How a method's samples were conditioned: EDM's random class labels, or none."""
        if self.edm is not None and spec.record.family == "edm" and self.edm.label_dim:
            return f"uniform random one-hot over {self.edm.label_dim} classes, seeded per shard (as EDM's generate.py)"
        return "none (unconditional)"

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
        labels = setup.edm.labels(batch, gen, cfg.device) if setup.edm is not None else None
        eps_model, schedule = setup.model_for(spec, labels)
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
            edm = setup.edm is not None and spec.record.family == "edm"
            weights = labels.weights_label(cfg.edm_model) if edm else setup.weights
            clipped = setup.clipping and spec.record.family != "edm"
            rows.append({"profile": cfg.profile, "method": str(spec), "label": spec.label, "budget": calls,
                         "steps": spec.record.steps_for_budget(calls), "calls": used_calls.pop(),
                         "num_samples": cfg.num_samples, "fid": stats.fid(reference),
                         "model": Path(cfg.edm_model).name if edm else setup.model_id, "weights": weights,
                         "features": setup.detector.name, "detector_weights": setup.detector.weights,
                         "detector_sha256": setup.detector.sha256, "reference": reference_description["reference"],
                         "seed": cfg.seed, "class_labels": setup.labels_note(spec),
                         "x0_clipping": "as the scheduler config" if clipped else "none",
                         "sampling_seconds_this_run": round(seconds.get((str(spec), calls), 0.0), 2)})
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
