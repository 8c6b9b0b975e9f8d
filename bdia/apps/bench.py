"""What exactness costs: network calls, wall time, memory and round-trip error per method, model, dtype, N.

``run_benchmark`` inverts and reconstructs the same data with every method and records, per row:
network calls, wall time (median, min and max over repeats, invert + reconstruct), the time ratio to
DDIM measured in the same run (of medians, and of minima), the time of the same round trip with a network
that costs nothing (the sampler's own arithmetic), peak GPU memory (on CUDA; on the CPU the bytes of the
inversion state are recorded instead), the relative round-trip error, and which weights the model has.
Every method is run once untimed first (warm-up: allocation, kernel selection, caches), and the timed
repeats interleave the methods, alternating their order, so that no method pays for coming first.
With fewer than 3 repeats a row says that its ratio is a single measurement. ``python -m bdia bench``
writes the rows to JSON and CSV with the machine they ran on; :func:`plot_benchmark` draws them.

Models (all offline unless noted): ``gmm2d`` (exact 2-D mixture), ``digits-ideal`` (exact ideal
denoiser of sklearn's digits), ``digits-unet`` (the shipped trained digits DDPM), ``digits-cfg`` (the same with
classifier-free guidance 3 against its null class, which null-text and negative-prompt inversion need), ``tiny-sd`` (the
miniature Stable Diffusion UNet with a prompt and guidance 3), ``sd-unet`` (the UNet of Stable Diffusion
1.5, ``stable-diffusion-v1-5/stable-diffusion-v1-5``, 64x64x4 latents = 512x512 images, with fixed random
text embeddings and guidance 3: from the hub, or its stand-in offline; slow on a CPU, meant for a GPU), and
the rectified flows: ``gmm2d-flow`` (the exact 2-D mixture under SD3's flow grid), ``digits-flow`` (the shipped
trained digits flow with classifier-free guidance 3), ``tiny-sd3`` and ``tiny-flux``
(the miniature SD3 and FLUX transformers on the cat photo's latent). On a flow ``ddim`` is Euler, and the
methods that run on flows only (``midpoint``, ``fireflow``) are measured there and skipped elsewhere; null-text and
negative-prompt inversion run on the guided models only (``digits-cfg``, ``tiny-sd``). A row's
``calls`` are forward network calls; null-text inversion's backward passes are in ``backward_passes``.
:mod:`bdia.apps.suites` names the grids (``--suite cost``, ``edit``).
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

from ..errors import InvalidValueError
from ..experiments import round_trip
from ..methods import INVERTIBLE_METHODS, MethodSpec, get_method, parse_methods
from ..samplers import runs_on
from ..schedules import VPSchedule
from .files import check_writable, code_digest
from .suites import BENCH_DTYPES, BENCH_MODELS, DEFAULT_METHODS

__all__ = ["MODELS", "DEFAULT_METHODS", "BenchModel", "TextUNet", "build_model", "run_benchmark", "machine_info",
           "write_results", "read_results", "results_folder", "committed_results", "cached_benchmark",
           "plot_benchmark", "check_grid"]

MODELS = BENCH_MODELS


@dataclass
class BenchModel:
    """A model, the data it inverts, and its schedule."""

    name: str
    model: object
    data: torch.Tensor
    schedule: VPSchedule
    description: str
    weights: str = "exact model"


class TextUNet:
    """A UNet2DConditionModel with fixed (random) text embeddings as ``model(z, t) -> eps``, with classifier-free
    guidance (the conditional and unconditional passes batched) when ``guidance_scale > 1``."""

    def __init__(self, unet, embeddings: torch.Tensor, guidance_scale: float):
        self.unet, self.emb, self.guidance_scale = unet, embeddings, guidance_scale

    @torch.no_grad()
    def __call__(self, z, t):
        x = z.to(self.unet.dtype)
        if self.guidance_scale <= 1:
            return self.unet(x, t, encoder_hidden_states=self.emb.expand(len(z), -1, -1)).sample.to(z.dtype)
        from ..diffusers import classifier_free_guidance

        out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=self.emb.expand(2 * len(z), -1, -1)).sample
        return classifier_free_guidance(out, self.guidance_scale).to(z.dtype)


def build_model(name: str, device="cpu", network_dtype: torch.dtype = torch.float32, seed: int = 0) -> BenchModel:
    """One of :data:`MODELS`, with its data, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    if name == "gmm2d":
        from ..toy import two_moons_mixture

        schedule = VPSchedule.scaled_linear()
        mixture = two_moons_mixture(8, std=0.08)
        return BenchModel(name, mixture.eps_model(schedule), mixture.sample(256, generator=gen).to(device), schedule,
                          "exact 2-D Gaussian mixture, 256 points")
    if name == "digits-ideal":
        from ..toy import ideal_denoiser, load_digits_data

        schedule = VPSchedule.ddpm()
        data = load_digits_data()
        idx = torch.randperm(len(data), generator=gen)[:64]
        return BenchModel(name, ideal_denoiser(data).eps_model(schedule), data[idx].to(device), schedule,
                          "exact ideal denoiser of 1797 digits, 64 digits")
    if name == "digits-unet":
        from ..diffusers import UNetEpsModel, load_unet
        from .digits import load_digits_images, shipped_model_path

        images, labels = load_digits_images()
        idx = torch.randperm(len(images), generator=gen)[:16]
        unet = load_unet(shipped_model_path(), device=device, dtype=network_dtype)
        return BenchModel(name, UNetEpsModel(unet, labels[idx].to(device)), images[idx].to(device), VPSchedule.ddpm(),
                          "trained digits DDPM (class-conditional), 16 digits", "trained by bdia")
    if name == "digits-cfg":
        from ..diffusers import UNetEpsModel, load_unet
        from .digits import NULL_CLASS, load_digits_images, shipped_model_path

        images, labels = load_digits_images()
        idx = torch.randperm(len(images), generator=gen)[:16]
        unet = load_unet(shipped_model_path(), device=device, dtype=network_dtype)
        model = UNetEpsModel(unet, labels[idx].to(device), guidance_scale=3.0, null_class=NULL_CLASS)
        return BenchModel(name, model, images[idx].to(device), VPSchedule.ddpm(),
                          "trained digits DDPM, classifier-free guidance 3, 16 digits", "trained by bdia")
    if name == "tiny-sd":
        from skimage import data as skdata

        from ..diffusers import StableDiffusionEpsModel, encode_image, schedule_from_scheduler, tiny_stable_diffusion

        pipe = tiny_stable_diffusion(seed=seed, device=device, dtype=network_dtype)
        latent = encode_image(pipe, skdata.chelsea(), dtype=torch.float64)
        return BenchModel(name, StableDiffusionEpsModel(pipe, "a photo of a cat", guidance_scale=3.0), latent,
                          schedule_from_scheduler(pipe.scheduler), "miniature SD UNet, 8x8x4 latent, guidance 3",
                          "random (miniature pipeline)")
    if name == "sd-unet":
        from ..diffusers import load_unet
        from .published import SD_MODEL
        from .labels import weights_label

        unet = load_unet(SD_MODEL, subfolder="unet", dtype=network_dtype, device=device)
        emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(device=device, dtype=network_dtype)
        side = unet.config.sample_size
        latent = torch.randn(1, unet.config.in_channels, side, side, generator=gen).to(device)
        return BenchModel(name, TextUNet(unet, emb, 3.0), latent, VPSchedule.stable_diffusion(),
                          f"SD 1.5 UNet, {side}x{side}x4 latent ({8 * side}x{8 * side}), random text embeddings, "
                          "guidance 3", weights_label(SD_MODEL))
    if name == "gmm2d-flow":
        from ..flow import FlowMatchSchedule
        from ..toy import two_moons_mixture

        schedule = FlowMatchSchedule(shift=3.0)
        mixture = two_moons_mixture(8, std=0.08)
        return BenchModel(name, mixture.velocity_model(schedule), mixture.sample(256, generator=gen).to(device),
                          schedule, "exact 2-D Gaussian mixture under a rectified flow (SD3's shift 3), 256 points")
    if name == "digits-flow":
        from ..diffusers import UNetVelocityModel, load_unet
        from ..flow import FlowMatchSchedule
        from .digits import NULL_CLASS, load_digits_images, shipped_flow_model_path

        images, labels = load_digits_images()
        idx = torch.randperm(len(images), generator=gen)[:16]
        unet = load_unet(shipped_flow_model_path(), device=device, dtype=network_dtype)
        model = UNetVelocityModel(unet, labels[idx].to(device), guidance_scale=3.0, null_class=NULL_CLASS)
        return BenchModel(name, model, images[idx].to(device), FlowMatchSchedule(),
                          "trained digits flow, classifier-free guidance 3, 16 digits", "trained by bdia")
    if name in ("tiny-sd3", "tiny-flux"):
        from skimage import data as skdata

        from ..diffusers import (BDIAFlowEditPipeline, FluxVelocityModel, SD3VelocityModel, encode_image, tiny_flux,
                                 tiny_stable_diffusion_3)

        flux = name == "tiny-flux"
        pipe = (tiny_flux if flux else tiny_stable_diffusion_3)(seed=seed, device=device, dtype=network_dtype)
        latent = encode_image(pipe, skdata.chelsea(), dtype=torch.float64)
        model = (FluxVelocityModel(pipe, "a photo of a cat", 3.5, max_sequence_length=32) if flux else
                 SD3VelocityModel(pipe, "a photo of a cat", guidance_scale=3.0))
        return BenchModel(name, model, latent, BDIAFlowEditPipeline(pipe).schedule(latent.shape),
                          f"miniature {'FLUX' if flux else 'SD3'} transformer, 16x16x4 latent, "
                          f"{'distilled guidance 3.5' if flux else 'guidance 3'}", "random (miniature pipeline)")
    raise InvalidValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")


class _FreeModel:
    """A network that costs nothing: returns a fixed output (of the real model's kind), so only the sampler's
    arithmetic is timed. For a guided model it offers the branches too, the unconditional one differentiable in the
    embedding (null-text inversion's optimisation then times its own arithmetic)."""

    def __init__(self, eps: torch.Tensor, model):
        self.eps, self.prediction, self.model = eps, getattr(model, "prediction", None), model

    def __call__(self, z, t):
        return self.eps

    def conditional(self, z, t):
        return self.eps

    def guided(self, z, t, null_embedding):
        return self.eps

    def unconditional(self, z, t, null_embedding):
        return self.eps + 0.0 * null_embedding.sum()

    def __getattr__(self, name):  # the embeddings and the guidance scale of the real model
        if name in ("null_embedding", "conditional_embedding", "guidance_scale"):
            return getattr(self.model, name)
        raise AttributeError(name)


def machine_info(device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


MIN_REPEATS_FOR_RATIO = 3


def check_grid(models=("gmm2d",), methods=DEFAULT_METHODS, dtypes=("float32", "float64"), step_counts=(10, 20),
               repeats: int = 3, out=None) -> None:
    """Refuse a benchmark grid that would fail part-way: unknown models or dtypes, methods without an inverse,
    step counts a method cannot take, repeats < 1, an output file that cannot be written."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise InvalidValueError(f"unknown model(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(MODELS)}")
    bad_dtypes = [d for d in dtypes if d not in BENCH_DTYPES]
    if bad_dtypes:
        raise InvalidValueError(f"unknown dtype(s) {', '.join(map(repr, bad_dtypes))}; allowed: "
                                f"{', '.join(BENCH_DTYPES)}")
    for spec in parse_methods(methods):
        record = get_method(spec.method)
        if not record.invertible:
            raise InvalidValueError(f"method {spec.method!r} has no inverse, so it has no round trip to benchmark; "
                                    f"invertible methods: {', '.join(INVERTIBLE_METHODS)}")
        too_few = [n for n in step_counts if n < record.min_steps]
        if too_few:
            raise InvalidValueError(f"method {spec.method!r} needs at least {record.min_steps} steps; "
                                    f"--steps has {too_few}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InvalidValueError(f"repeats must be a positive integer, got {repeats!r}")
    if out is not None:
        check_writable(Path(out).parent, f"the results to {out}")


def _interleaved_times(model, data, schedule, n, specs, repeats):
    """Warm every method up once, then time ``repeats`` round trips of each, alternating the methods' order."""
    first = {str(spec): round_trip(model, data, schedule, n, spec) for spec in specs}  # warm-up, untimed
    times = {str(spec): [] for spec in specs}
    for r in range(repeats):
        for spec in (specs if r % 2 == 0 else specs[::-1]):
            trip = round_trip(model, data, schedule, n, spec)
            times[str(spec)].append(trip.invert_seconds + trip.reconstruct_seconds)
    return first, times


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

    check_grid(models, methods, dtypes, step_counts, repeats)
    specs = parse_methods(methods)
    if not any(s.method == "ddim" for s in specs):
        specs = [MethodSpec("ddim")] + specs  # the reference for time ratios
    rows = []
    cuda = torch.device(device).type == "cuda"
    total = len(models) * len(dtypes) * len(step_counts)
    bar = tqdm(total=total, desc="benchmark", disable=not progress)
    for name in models:
        bench, built_for = None, None
        for dtype_name in dtypes:
            net_name = dtype_name if network_dtype == "latent" else network_dtype
            if net_name != built_for:
                bench, built_for = build_model(name, device=device, network_dtype=getattr(torch, net_name)), net_name
            data = bench.data.to(getattr(torch, dtype_name))
            free = _FreeModel(bench.model(data, float(bench.schedule.timesteps(2)[0])), bench.model)
            runnable = [s for s in specs if runs_on(s.method, bench.model, bench.schedule)]
            for n in step_counts:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                trips, times = _interleaved_times(bench.model, data, bench.schedule, n, runnable, repeats)
                peak = torch.cuda.max_memory_allocated(device) if cuda else None
                _, free_times = _interleaved_times(free, data, bench.schedule, n, runnable, repeats)
                block = []
                for spec in runnable:
                    trip, t = trips[str(spec)], times[str(spec)]
                    block.append({
                        "model": name, "model_description": bench.description, "weights": bench.weights,
                        "dtype": dtype_name, "network_dtype": net_name, "steps": n, "method": str(spec),
                        "label": spec.label, "invert_calls": trip.invert_calls,
                        "reconstruct_calls": trip.reconstruct_calls, "calls": trip.calls,
                        "seconds_median": statistics.median(t), "seconds_min": min(t), "seconds_max": max(t),
                        "sampler_only_seconds_median": statistics.median(free_times[str(spec)]),
                        "peak_gpu_memory_bytes": peak,
                        "backward_passes": int(trip.state.extras.get("backward_passes", 0)),
                        "state_bytes": trip.state.nbytes,
                        "round_trip_error": trip.error, "input_moved_by_lattice": trip.input_moved,
                        "repeats": repeats,
                        "timing_note": "" if repeats >= MIN_REPEATS_FOR_RATIO else
                        f"{repeats} repeat(s): the time ratio is a single measurement, not a comparison"})
                ddim = next(r for r in block if r["method"] == "ddim")
                for r in block:
                    r["time_ratio_to_ddim"] = r["seconds_median"] / ddim["seconds_median"]
                    r["time_ratio_to_ddim_min"] = r["seconds_min"] / ddim["seconds_min"]
                    # the method's own arithmetic per step, as a share of a DDIM step with the real network
                    r["sampler_overhead_per_step"] = (r["sampler_only_seconds_median"] / r["calls"]) / \
                        (ddim["seconds_median"] / ddim["calls"])
                rows.extend(block)
                bar.update(1)
    bar.close()
    return rows


def write_results(rows: list[dict], path, device="cpu", note: str = "", suite: str = "cost") -> Path:
    """Write ``rows`` with :func:`machine_info` and the suite's name to ``path`` (JSON) and a CSV beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine_info(device), "suite": suite, "note": note,
                                "created": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_results(path) -> dict:
    """A results file of :func:`write_results`: ``{"machine", "suite", "note", "created", "rows"}`` (a file written
    before suites existed is the ``cost`` suite's)."""
    record = json.loads(Path(path).read_text())
    record.setdefault("suite", "cost")
    return record


def results_folder(start=None) -> Path | None:
    """The committed results, ``benchmarks/results`` of the repository that holds ``start`` (default: the working
    directory); None outside a checkout (a chapter opened alone in Colab)."""
    start = Path(start or Path.cwd()).resolve()
    for parent in (start, *start.parents):
        if (parent / "benchmarks" / "results").is_dir():
            return parent / "benchmarks" / "results"
    return None


def committed_results(suite: str = "cost", gpu: bool = False, folder=None) -> dict | None:
    """The committed results of ``suite`` measured on a CPU (or, with ``gpu``, on a GPU), newest first; None when
    none is committed. The only source of the book's timing statements."""
    folder = Path(folder) if folder else results_folder()
    if folder is None:
        return None
    records = [read_results(path) for path in sorted(folder.glob("*.json"))]
    matching = [r for r in records if r["suite"] == suite and ("gpu" in r["machine"]) == gpu]
    return max(matching, key=lambda r: r["created"], default=None)


def cached_benchmark(folder, device="cpu", **grid) -> tuple[dict, bool]:
    """:func:`run_benchmark` with its results kept in ``folder``, keyed by the grid, the code and the machine.

    Returns ``(results, reused)``. A second call with the same grid, library code and machine reads the
    file instead of measuring again (delete it to re-measure); any change gives a new file.
    """
    import hashlib

    code = code_digest()
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

    from .plotting import PAGE_WIDTH, method_style, stamp_profile

    sub = [r for r in rows if r["model"] == model]
    dtypes = sorted({r["dtype"] for r in sub})
    fig, axes = plt.subplots(1, len(dtypes) + 1, figsize=(PAGE_WIDTH, 2.8))
    for ax, dtype in zip(axes, dtypes):
        for label in dict.fromkeys(r["label"] for r in sub):
            pts = sorted((r["steps"], max(r["round_trip_error"], 1e-18)) for r in sub
                         if r["label"] == label and r["dtype"] == dtype)
            ax.loglog(*zip(*pts), ms=3, label=label, **method_style(label))
        ax.set(title=f"{model}, {dtype}", xlabel="steps N", ylabel="round-trip error (0 at 1e-18)")
    ax = axes[-1]
    for label in dict.fromkeys(r["label"] for r in sub):
        pts = sorted((r["steps"], r["time_ratio_to_ddim"]) for r in sub if r["label"] == label and r["dtype"] == dtypes[-1])
        ax.plot(*zip(*pts), ms=3, label=label, **method_style(label))
    ax.set(title=f"wall time / DDIM ({dtypes[-1]})", xlabel="steps N", xscale="log")
    ax.legend(fontsize=6)
    weights = ", ".join(sorted({r.get("weights", "?") for r in sub}))
    stamp_profile(fig, profile, f"{model} · weights: {weights}")
    return fig
