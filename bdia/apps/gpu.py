"""The prepared GPU check: ``python -m bdia bench --suite gpu --out benchmarks/results/<device>.json``.

One command that measures on a CUDA machine what the CPU cannot show, with the published architectures and random
weights built in place (no hub, no files):

* **round trips** of the Stable Diffusion 1.5 UNet at 512 x 512 (64 x 64 x 4 latents, fixed random text
  embeddings, guidance 1), 50 steps, for DDIM, EDICT, BDIA (gamma = 1), BDIA on the lattice and O-BELM: seconds per
  round trip (CUDA events; every method warmed up once, then the methods interleaved over the repeats; median of 5),
  the ratio to DDIM, the round-trip error and the peak GPU memory, for the network in float16 and bfloat16 with
  float32 and float64 latents (batch 1), and with float64 latents at batch 8;
* whether the **lattice** round trip is bit-exact with ``torch.use_deterministic_algorithms(True)`` (cuBLAS needs
  ``CUBLAS_WORKSPACE_CONFIG``, set here before CUDA starts) and without it (cuDNN's autotuner on);
* the **sampling throughput** of the CIFAR10 DDPM architecture (images per second at batch 512, 10 network calls,
  DDIM and BDIA) and the projected time of a 50,000-sample FID per method;
* **rectified flow**: the SD3.5 Medium transformer at 512 x 512 (bfloat16, float32 latents, 28 steps): Euler,
  BDIA, BDIA on the lattice and EDICT.

The full grid is planned to finish in about 8 minutes on an H200 (it has not been timed on one yet: no GPU was
available where it was written). ``--smoke`` runs the same code on the CPU with miniature networks, few steps and
one repeat, so the test suite checks the code and the result file's schema without a GPU. Each finished part
(a setting's round trips, the lattice check, the throughput, the flow round trips) is kept in ``<out>.partial``
at once: a run cut short by the GPU lease resumes there when the same command runs again. The results file stamps
the machine (GPU name, driver, torch, CUDA and cuDNN versions); chapter 6 shows it once it is committed under
``benchmarks/results/``. The paper profile's chapters on CUDA are ``make paper-dryrun DRYRUN_DEVICE=cuda``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["GpuGrid", "FULL", "SMOKE", "run_gpu_suite", "gpu_machine", "check_gpu_results", "RESULT_KEYS"]

#: what a results file of the suite holds (``check_gpu_results`` checks it)
RESULT_KEYS = {
    "suite": str, "smoke": bool, "machine": dict, "note": str, "created": str, "grid": dict, "round_trips": list,
    "lattice_bit_exact": dict, "throughput": list, "flow": list, "rows": list,
}
ROUND_TRIP_KEYS = {"model": str, "batch": int, "network_dtype": str, "latent_dtype": str, "method": str, "label": str,
                   "steps": int, "calls": int, "repeats": int, "seconds_median": float, "seconds_min": float,
                   "seconds_max": float, "time_ratio_to_ddim": float, "round_trip_error": float,
                   "peak_gpu_memory_gib": (float, type(None))}


@dataclass(frozen=True)
class GpuGrid:
    """What the suite runs: the networks' configs and sizes, the settings and the repeats."""

    unet: dict
    latent_side: int
    settings: tuple  # (batch, network dtype, latent dtype)
    steps: int
    repeats: int
    methods: tuple = ("ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=1.0,lattice=true", "obelm")
    ddpm: dict = field(default_factory=dict)
    throughput_batch: int = 512
    throughput_calls: int = 10
    flow: dict = field(default_factory=dict)
    flow_side: int = 64
    flow_steps: int = 28
    flow_methods: tuple = ("ddim", "bdia:gamma=1.0", "bdia:gamma=1.0,lattice=true", "edict")


def _full() -> GpuGrid:
    from .published import CIFAR10_UNET, SD35_MEDIUM_TRANSFORMER, SD_UNET

    settings = tuple((1, net, lat) for net in ("float16", "bfloat16") for lat in ("float32", "float64")) + \
        tuple((8, net, "float64") for net in ("float16", "bfloat16"))
    return GpuGrid(unet=SD_UNET, latent_side=64, settings=settings, steps=50, repeats=5, ddpm=CIFAR10_UNET,
                   flow=SD35_MEDIUM_TRANSFORMER)


def _smoke() -> GpuGrid:
    unet = {"_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
            "attention_head_dim": 4, "norm_num_groups": 8, "in_channels": 4, "out_channels": 4, "sample_size": 8}
    ddpm = {"_class_name": "UNet2DModel", "block_out_channels": [16, 32], "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 8, "in_channels": 3, "out_channels": 3, "sample_size": 8}
    flow = {"_class_name": "SD3Transformer2DModel", "sample_size": 8, "patch_size": 1, "in_channels": 4,
            "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 4, "caption_projection_dim": 32,
            "joint_attention_dim": 32, "pooled_projection_dim": 64, "out_channels": 4}
    settings = ((1, "float32", "float32"), (1, "bfloat16", "float64"), (2, "float32", "float64"))
    return GpuGrid(unet=unet, latent_side=8, settings=settings, steps=4, repeats=1, ddpm=ddpm, throughput_batch=8,
                   throughput_calls=4, flow=flow, flow_side=8, flow_steps=4)


#: the grids of a GPU run and of ``--smoke`` (CPU, miniature networks)
FULL, SMOKE = _full, _smoke


def gpu_machine(device) -> dict:
    """The machine a run used: platform, torch, and on CUDA the GPU's name, memory, driver, CUDA and cuDNN."""
    import platform

    import torch

    info = {"platform": platform.platform(), "processor": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), driver=_driver())
    return info


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _network(config: dict, dtype, device, seed: int = 0):
    """A diffusers network of ``config`` (the published fields) with seeded random weights, in ``dtype``."""
    import diffusers
    import torch

    from ..diffusers import cast_network

    torch.manual_seed(seed)
    cls = getattr(diffusers, config["_class_name"])
    with torch.device(device):
        net = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    return cast_network(net, dtype).eval().requires_grad_(False)


class _Timer:
    """Wall time of a block: CUDA events on a GPU (the device's own clock, no host jitter), ``perf_counter`` else."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, work):
        import torch

        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            result = work()
            end.record()
            torch.cuda.synchronize()
            return result, start.elapsed_time(end) / 1000.0
        begin = time.perf_counter()
        result = work()
        return result, time.perf_counter() - begin


def _round_trip(model, x0, schedule, steps, spec):
    from ..experiments import relative_error
    from ..models import CountingModel
    from ..samplers import invert, sample
    from ..steps import lattice_round

    counting = CountingModel(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the lattice's nondeterminism warning: determinism is measured separately
        state = invert(counting, x0, schedule, steps, spec.method, **spec.options)
        rec = sample(counting, state, schedule, steps, spec.method)
    lattice = state.options.get("lattice")
    target = x0 if lattice is None else lattice_round(x0, lattice)
    return rec, relative_error(rec, target), counting.calls


def _interleaved(model, x0, schedule, steps, specs, repeats, device, label: dict) -> list[dict]:
    """Round trips of every method: one untimed warm-up each, then ``repeats`` timed ones with the methods'
    order alternating; peak memory per method on CUDA."""
    import torch

    timer, cuda = _Timer(device), torch.device(device).type == "cuda"
    first = {str(s): _round_trip(model, x0, schedule, steps, s) for s in specs}
    times, peaks = {str(s): [] for s in specs}, {}
    for r in range(repeats):
        for spec in (specs if r % 2 == 0 else specs[::-1]):
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            _, seconds = timer(lambda: _round_trip(model, x0, schedule, steps, spec))
            times[str(spec)].append(seconds)
            if cuda:
                peaks[str(spec)] = max(peaks.get(str(spec), 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
    ddim = statistics.median(times["ddim"])
    rows = []
    for spec in specs:
        t = times[str(spec)]
        _, error, calls = first[str(spec)]
        rows.append({**label, "method": str(spec), "label": spec.label, "steps": steps, "calls": calls,
                     "repeats": repeats, "seconds_median": statistics.median(t), "seconds_min": min(t),
                     "seconds_max": max(t), "time_ratio_to_ddim": statistics.median(t) / ddim,
                     "round_trip_error": float(error), "peak_gpu_memory_gib": peaks.get(str(spec))})
    return rows


def _sd_round_trips(grid: GpuGrid, device, progress, part) -> list[dict]:
    import torch

    from ..methods import parse_methods
    from ..schedules import VPSchedule
    from .bench import TextUNet

    specs = parse_methods(grid.methods)
    rows, nets = [], {}

    def measure(batch, net_dtype, latent_dtype):
        if net_dtype not in nets:
            nets.clear()  # one network at a time on the device
            nets[net_dtype] = _network(grid.unet, getattr(torch, net_dtype), device)
        unet = nets[net_dtype]
        gen = torch.Generator().manual_seed(batch)
        emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(device, getattr(torch, net_dtype))
        shape = (batch, unet.config.in_channels, grid.latent_side, grid.latent_side)
        x0 = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, getattr(torch, latent_dtype))
        progress(f"SD UNet round trips: batch {batch}, {net_dtype} network, {latent_dtype} latents")
        return _interleaved(TextUNet(unet, emb, 1.0), x0, VPSchedule.stable_diffusion(), grid.steps, specs,
                            grid.repeats, device, {"model": "sd15-unet", "batch": batch, "network_dtype": net_dtype,
                                                   "latent_dtype": latent_dtype})

    for setting in grid.settings:
        rows += part("round trips " + " ".join(map(str, setting)), lambda: measure(*setting))
    return rows


def _lattice_determinism(grid: GpuGrid, device) -> dict:
    """Whether the lattice round trip is bit-exact (``torch.equal``) with and without deterministic algorithms."""
    import torch

    from ..methods import MethodSpec
    from ..schedules import VPSchedule
    from .bench import TextUNet

    unet = _network(grid.unet, torch.float16 if torch.device(device).type == "cuda" else torch.float32, device)
    gen = torch.Generator().manual_seed(7)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(device, unet.dtype)
    x0 = torch.randn(2, unet.config.in_channels, grid.latent_side, grid.latent_side, generator=gen).to(device)
    model, spec, result = TextUNet(unet, emb, 1.0), MethodSpec.parse("bdia:gamma=1.0,lattice=true"), {}
    for name, deterministic in (("deterministic", True), ("nondeterministic", False)):
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
        try:
            rec, error, _ = _round_trip(model, x0, VPSchedule.stable_diffusion(), grid.steps, spec)
            result[name] = error == 0.0
        finally:
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.benchmark = False
    return result


def _throughput(grid: GpuGrid, device) -> list[dict]:
    """Images per second of the CIFAR10 DDPM architecture at ``throughput_batch``, and a 50,000-sample FID's
    projected sampling time, per method."""
    import torch

    from ..diffusers import UNetEpsModel
    from ..methods import parse_methods
    from ..samplers import sample
    from ..schedules import VPSchedule

    unet = _network(grid.ddpm, torch.float32, device)
    model, schedule, timer = UNetEpsModel(unet), VPSchedule.ddpm(), _Timer(device)
    side = unet.config.sample_size
    noise = torch.randn(grid.throughput_batch, unet.config.in_channels, side, side,
                        generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for spec in parse_methods(["ddim", "bdia:gamma=1.0"]):
        steps = spec.record.steps_for_budget(grid.throughput_calls)
        run = lambda: sample(model, noise, schedule, steps, spec.method, **spec.options)  # noqa: E731
        run()  # warm-up
        _, seconds = timer(run)
        per_second = grid.throughput_batch / seconds
        rows.append({"model": "cifar10-ddpm", "method": str(spec), "label": spec.label, "batch": grid.throughput_batch,
                     "calls": grid.throughput_calls, "images_per_second": per_second,
                     "projected_50k_fid_minutes": 50_000 / per_second / 60})
    return rows


def _flow_round_trips(grid: GpuGrid, device, progress) -> list[dict]:
    import torch

    from ..diffusers import SD3VelocityModel
    from ..flow import FlowMatchSchedule
    from ..methods import parse_methods

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    transformer = _network(grid.flow, dtype, device)
    gen = torch.Generator().manual_seed(3)
    config = transformer.config
    cond = torch.randn(1, 77, config.joint_attention_dim, generator=gen).to(device, dtype)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=gen).to(device, dtype)
    model = SD3VelocityModel.from_embeddings(transformer, cond, pooled)
    x0 = torch.randn(1, config.in_channels, grid.flow_side, grid.flow_side, generator=gen).to(device)
    progress("SD3-architecture transformer round trips")
    return _interleaved(model, x0, FlowMatchSchedule(shift=3.0), grid.flow_steps, parse_methods(grid.flow_methods),
                        grid.repeats, device, {"model": "sd35-medium-transformer", "batch": 1,
                                               "network_dtype": str(dtype).removeprefix("torch."),
                                               "latent_dtype": "float32"})


def check_gpu_results(record: dict) -> None:
    """Raise ``ValueError`` naming what a results file of the suite lacks or holds of the wrong type."""
    problems = [f"{key}: missing or not {kind.__name__}" for key, kind in RESULT_KEYS.items()
                if not isinstance(record.get(key), kind)]
    for row in record.get("round_trips", []) + record.get("flow", []):
        problems += [f"round trip {row.get('label')}: {key}" for key, kind in ROUND_TRIP_KEYS.items()
                     if not isinstance(row.get(key), kind)]
    if not {"deterministic", "nondeterministic"} <= set(record.get("lattice_bit_exact", {})):
        problems.append("lattice_bit_exact: needs deterministic and nondeterministic")
    if problems:
        raise ValueError("the GPU results file is incomplete: " + "; ".join(problems))


def run_gpu_suite(out, device: str = "cuda", smoke: bool = False, note: str = "") -> int:
    """Run the suite (see the module) and write its results to ``out``; returns the exit status."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS
    import torch

    from ..errors import InvalidValueError
    from .files import check_writable, code_digest

    if smoke:
        device = "cpu"
    elif torch.device(device).type != "cuda":
        raise InvalidValueError("--suite gpu measures a CUDA device: pass --device cuda, or --smoke to run its code on "
                                "the CPU at tiny sizes")
    out = Path(out)
    check_writable(out.parent, f"the results to {out}")
    grid = (SMOKE if smoke else FULL)()
    grid_record = json.loads(json.dumps(asdict(grid), default=str))
    machine = gpu_machine(device)
    start = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)

    # each finished part goes to a file beside the results at once, so an interrupted run (the GPU lease ends, the
    # command's time runs out) resumes where it stopped; parts of another grid, machine or code are not reused
    partial = out.with_name(out.name + ".partial")
    identity = {"grid": grid_record, "machine": machine, "code": code_digest()}
    try:
        done = json.loads(partial.read_text()) if partial.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        progress(f"{partial} is unreadable: starting over")
        done = {}
    if done.get("identity") != identity:
        done = {"identity": identity, "parts": {}, "seconds": 0.0}
    elif done["parts"]:
        progress(f"resuming from {partial}: {len(done['parts'])} part(s) done")

    def part(key: str, measure):
        if key not in done["parts"]:
            begin = time.perf_counter()
            done["parts"][key] = measure()
            done["seconds"] += time.perf_counter() - begin  # over every run that made a part
            tmp = partial.with_name(partial.name + ".tmp")
            tmp.write_text(json.dumps(done))
            os.replace(tmp, partial)
        return done["parts"][key]

    round_trips = _sd_round_trips(grid, device, progress, part)
    progress("lattice determinism")
    lattice = part("lattice determinism", lambda: _lattice_determinism(grid, device))
    progress("CIFAR10 DDPM throughput")
    throughput = part("throughput", lambda: _throughput(grid, device))
    flow = part("flow round trips", lambda: _flow_round_trips(grid, device, progress))
    record = {"suite": "gpu", "smoke": smoke, "machine": machine, "note": note, "created": time.strftime("%Y-%m-%d"),
              "grid": grid_record, "round_trips": round_trips, "lattice_bit_exact": lattice,
              "throughput": throughput, "flow": flow, "rows": round_trips,
              "seconds": round(done["seconds"], 1)}
    check_gpu_results(record)
    out.write_text(json.dumps(record, indent=2))
    partial.unlink()
    progress(f"results: {out}")
    return 0
