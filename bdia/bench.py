"""What exactness costs: network calls, wall time, memory and round-trip error per method, model, dtype, N.

``run_benchmark`` inverts and reconstructs the same data with every method and records, per row:
network calls, wall time (median, min and max over repeats, invert + reconstruct), the time ratio to
DDIM measured in the same run, the time of the same round trip with a network that costs nothing
(the sampler's own arithmetic), peak GPU memory (on CUDA; on the CPU the bytes of the inversion state
are recorded instead), and the relative round-trip error. ``python -m bdia bench`` writes the rows to
JSON and CSV with the machine they ran on; :func:`plot_benchmark` draws them.

Models (all offline unless noted): ``gmm2d`` (exact 2-D mixture), ``digits-ideal`` (exact ideal
denoiser of sklearn's digits), ``digits-unet`` (the shipped trained digits DDPM), ``tiny-sd`` (the
miniature Stable Diffusion UNet with a prompt and guidance 3), ``sd-unet`` (a full-size Stable
Diffusion 1.x UNet, 64x64x4 latents = 512x512 images, from its published config with random weights:
slow on a CPU, meant for a GPU).
"""

from __future__ import annotations

import csv
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .experiments import MethodSpec, parse_methods, round_trip
from .schedules import VPSchedule

__all__ = ["MODELS", "DEFAULT_METHODS", "BenchModel", "build_model", "run_benchmark", "machine_info",
           "write_results", "read_results", "cached_benchmark", "plot_benchmark"]

MODELS = ("gmm2d", "digits-ideal", "digits-unet", "tiny-sd", "sd-unet")
DEFAULT_METHODS = ("ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm")


@dataclass
class BenchModel:
    """A model, the data it inverts, and its schedule."""

    name: str
    model: object
    data: torch.Tensor
    schedule: VPSchedule
    description: str


def _sd_unet_config() -> dict:
    # Stable Diffusion 1.x's published UNet configuration (860M parameters)
    return dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


class _TextUNet:
    """A UNet2DConditionModel with fixed (random) text embeddings and classifier-free guidance."""

    def __init__(self, unet, embeddings: torch.Tensor, guidance_scale: float):
        self.unet, self.emb, self.guidance_scale = unet, embeddings, guidance_scale

    @torch.no_grad()
    def __call__(self, z, t):
        x = z.to(self.unet.dtype)
        from .diffusers.models import classifier_free_guidance

        out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=self.emb.expand(2 * len(z), -1, -1)).sample
        return classifier_free_guidance(out, self.guidance_scale).to(z.dtype)


def build_model(name: str, device="cpu", network_dtype: torch.dtype = torch.float32, seed: int = 0) -> BenchModel:
    """One of :data:`MODELS`, with its data, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    if name == "gmm2d":
        from .toy import two_moons_mixture

        schedule = VPSchedule.stable_diffusion()
        mixture = two_moons_mixture(8, std=0.08)
        return BenchModel(name, mixture.eps_model(schedule), mixture.sample(256, generator=gen).to(device), schedule,
                          "exact 2-D Gaussian mixture, 256 points")
    if name == "digits-ideal":
        from .toy import ideal_denoiser, load_digits_data

        schedule = VPSchedule.ddpm()
        data = load_digits_data()
        idx = torch.randperm(len(data), generator=gen)[:64]
        return BenchModel(name, ideal_denoiser(data).eps_model(schedule), data[idx].to(device), schedule,
                          "exact ideal denoiser of 1797 digits, 64 digits")
    if name == "digits-unet":
        from .diffusers import UNetEpsModel, load_unet
        from .digits import load_digits_images, shipped_model_path

        images, labels = load_digits_images()
        idx = torch.randperm(len(images), generator=gen)[:16]
        unet = load_unet(shipped_model_path(), device=device, dtype=network_dtype)
        return BenchModel(name, UNetEpsModel(unet, labels[idx].to(device)), images[idx].to(device), VPSchedule.ddpm(),
                          "trained digits DDPM (class-conditional), 16 digits")
    if name == "tiny-sd":
        from skimage import data as skdata

        from .diffusers import StableDiffusionEpsModel, encode_image, schedule_from_scheduler, tiny_stable_diffusion

        pipe = tiny_stable_diffusion(seed=seed, device=device, dtype=network_dtype)
        latent = encode_image(pipe, skdata.chelsea(), dtype=torch.float64)
        return BenchModel(name, StableDiffusionEpsModel(pipe, "a photo of a cat", guidance_scale=3.0), latent,
                          schedule_from_scheduler(pipe.scheduler), "miniature SD UNet, 8x8x4 latent, guidance 3")
    if name == "sd-unet":
        from diffusers import UNet2DConditionModel

        torch.manual_seed(seed)
        from .diffusers import cast_network

        unet = cast_network(UNet2DConditionModel(**_sd_unet_config()).to(device).eval(), network_dtype)
        emb = torch.randn(1, 77, 768, generator=gen).to(device=device, dtype=network_dtype)
        latent = torch.randn(1, 4, 64, 64, generator=gen).to(device)
        return BenchModel(name, _TextUNet(unet, emb, 3.0), latent, VPSchedule.stable_diffusion(),
                          "full-size SD 1.x UNet (random weights), 64x64x4 latent (512x512), guidance 3")
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


class _FreeModel:
    """A network that costs nothing: returns a fixed eps, so only the sampler's arithmetic is timed."""

    def __init__(self, eps: torch.Tensor):
        self.eps = eps

    def __call__(self, z, t):
        return self.eps


def machine_info(device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _timed_round_trips(model, data, schedule, n, spec, repeats):
    trips = [round_trip(model, data, schedule, n, spec) for _ in range(repeats)]
    times = [t.invert_seconds + t.reconstruct_seconds for t in trips]
    return trips[0], times


def run_benchmark(models=("gmm2d",), methods=DEFAULT_METHODS, dtypes=("float32", "float64"), step_counts=(10, 20),
                  repeats: int = 3, device="cpu", network_dtype: str = "float32", progress: bool = True) -> list[dict]:
    """Run the grid and return one row per (model, dtype, steps, method); see the module docstring.

    ``network_dtype`` is the dtype the networks run in, or ``"latent"``: the dtype of each row's latents,
    so that float64 rows run a float64 network (the setting in which exactness is bit-level; a network in
    lower precision than the latents is exact only as far as it is fed the same input bits in both
    directions, see :func:`bdia.experiments.compare_network_inputs`). The exact models compute in float64
    whatever this says.
    """
    from tqdm.auto import tqdm

    specs = parse_methods(methods)
    if not any(s.method == "ddim" for s in specs):
        specs = [MethodSpec("ddim")] + specs  # the reference for time ratios
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    rows = []
    cuda = torch.device(device).type == "cuda"
    total = len(models) * len(dtypes) * len(step_counts) * len(specs)
    bar = tqdm(total=total, desc="benchmark", disable=not progress)
    for name in models:
        bench, built_for = None, None
        for dtype_name in dtypes:
            net_name = dtype_name if network_dtype == "latent" else network_dtype
            if net_name != built_for:
                bench, built_for = build_model(name, device=device, network_dtype=getattr(torch, net_name)), net_name
            data = bench.data.to(getattr(torch, dtype_name))
            free = _FreeModel(bench.model(data, float(bench.schedule.timesteps(2)[0])))
            for n in step_counts:
                block = []
                for spec in specs:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    trip, times = _timed_round_trips(bench.model, data, bench.schedule, n, spec, repeats)
                    peak = torch.cuda.max_memory_allocated(device) if cuda else None
                    _, free_times = _timed_round_trips(free, data, bench.schedule, n, spec, repeats)
                    block.append({
                        "model": name, "model_description": bench.description, "dtype": dtype_name,
                        "network_dtype": net_name, "steps": n, "method": str(spec), "label": spec.label,
                        "invert_calls": trip.invert_calls, "reconstruct_calls": trip.reconstruct_calls,
                        "calls": trip.calls, "seconds_median": statistics.median(times), "seconds_min": min(times),
                        "seconds_max": max(times), "sampler_only_seconds_median": statistics.median(free_times),
                        "peak_gpu_memory_bytes": peak,
                        "state_bytes": sum(z.numel() * z.element_size() for z in trip.state.latents),
                        "round_trip_error": trip.error, "repeats": repeats})
                    bar.update(1)
                ddim = next(r for r in block if r["method"] == "ddim")
                for r in block:
                    r["time_ratio_to_ddim"] = r["seconds_median"] / ddim["seconds_median"]
                    # the method's own arithmetic per step, as a share of a DDIM step with the real network
                    r["sampler_overhead_per_step"] = (r["sampler_only_seconds_median"] / r["calls"]) / \
                        (ddim["seconds_median"] / ddim["calls"])
                rows.extend(block)
    bar.close()
    return rows


def write_results(rows: list[dict], path, device="cpu", note: str = "") -> Path:
    """Write ``rows`` with :func:`machine_info` to ``path`` (JSON) and a CSV beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine_info(device), "note": note, "created": time.strftime("%Y-%m-%d"),
                                "rows": rows}, indent=2))
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_results(path) -> dict:
    """A results file of :func:`write_results`: ``{"machine", "note", "created", "rows"}``."""
    return json.loads(Path(path).read_text())


def cached_benchmark(folder, device="cpu", **grid) -> tuple[dict, bool]:
    """:func:`run_benchmark` with its results kept in ``folder``, keyed by the grid, the code and the machine.

    Returns ``(results, reused)``. A second call with the same grid, library code and machine reads the
    file instead of measuring again (delete it to re-measure); any change gives a new file.
    """
    import hashlib

    root = Path(__file__).parent
    code = "".join(hashlib.sha256((root / f).read_bytes()).hexdigest()
                   for f in ("samplers.py", "steps.py", "bench.py", "experiments.py"))
    key = json.dumps({"grid": grid, "code": code, "machine": machine_info(device)}, sort_keys=True, default=str)
    path = Path(folder) / f"bench-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if path.exists():
        return read_results(path), True
    rows = run_benchmark(device=device, **grid)
    write_results(rows, path, device=device, note="measured by cached_benchmark")
    return read_results(path), False


def plot_benchmark(rows: list[dict], model: str, profile: str = "ci"):
    """Round-trip error against steps (per dtype) and time ratio to DDIM, for one model."""
    import matplotlib.pyplot as plt

    from .plotting import method_color, stamp_profile

    sub = [r for r in rows if r["model"] == model]
    dtypes = sorted({r["dtype"] for r in sub})
    fig, axes = plt.subplots(1, len(dtypes) + 1, figsize=(4 * (len(dtypes) + 1), 3.3))
    for ax, dtype in zip(axes, dtypes):
        for label in dict.fromkeys(r["label"] for r in sub):
            pts = sorted((r["steps"], r["round_trip_error"]) for r in sub if r["label"] == label and r["dtype"] == dtype)
            ax.loglog(*zip(*pts), marker="o", ms=3, label=label, color=method_color(label),
                      ls="--" if "0.96" in label else "-")
        ax.set(title=f"{model}, {dtype}", xlabel="steps N", ylabel="round-trip error")
    ax = axes[-1]
    for label in dict.fromkeys(r["label"] for r in sub):
        pts = sorted((r["steps"], r["time_ratio_to_ddim"]) for r in sub if r["label"] == label and r["dtype"] == dtypes[-1])
        ax.plot(*zip(*pts), marker="o", ms=3, label=label, color=method_color(label), ls="--" if "0.96" in label else "-")
    ax.set(title=f"wall time / DDIM ({dtypes[-1]})", xlabel="steps N", xscale="log")
    ax.legend(fontsize=7)
    stamp_profile(fig, profile, model)
    return fig
