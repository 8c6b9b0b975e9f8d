"""Chapter 6's tables and sentences: network calls per round trip, the round-trip error in units of machine epsilon,
the lattice rows, the state kept in memory, and the timing verdict, which comes from committed benchmark results only
(:func:`bdia.apps.bench.committed_results`), never from the chapter's own run."""

from __future__ import annotations

import numpy as np

__all__ = ["glance", "call_table", "epsilon_units", "rounding_range", "state_table", "machine_line", "time_ratios",
           "time_verdict", "gpu_table", "gpu_verdict"]


def call_table(rows, model: str, order):
    """Network calls of a round trip (invert + reconstruct) per method and step count, for one model."""
    calls = rows[rows.model == model].pivot_table(index="label", columns="steps", values="calls", aggfunc="first")
    calls = calls.loc[order]
    calls.columns = [f"N = {n}" for n in calls.columns]
    return calls


def epsilon_units(rows, models, order):
    """The round-trip error at the largest step count in units of each dtype's machine epsilon."""
    eps = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
    at = rows[rows.steps == rows.steps.max()]
    at = at.assign(**{"error / eps": at.round_trip_error / at.dtype.map(eps)})
    units = at.pivot_table(index=["model", "label"], columns="dtype", values="error / eps")
    return units.reindex([(m, label) for m in models for label in order])


def rounding_range(rows) -> dict:
    """The smallest and largest round-trip error of the exact methods without the lattice, per dtype."""
    exact = rows[(rows.method != "ddim") & ~rows.label.str.contains("lattice")]
    return {dtype: (float(group.round_trip_error.min()), float(group.round_trip_error.max()))
            for dtype, group in exact.groupby("dtype")}


def state_table(rows, order, steps: int, dtype: str = "float32"):
    """The bytes of each method's inversion state, per model (KiB)."""
    at = rows[(rows.steps == steps) & (rows.dtype == dtype)]
    return at.pivot_table(index="label", columns="model", values="state_bytes").loc[order] / 1024


def machine_line(name: str, record: dict, width: int = 88) -> str:
    """A paragraph naming a committed run: its file, machine, threads, torch, date and note, wrapped at ``width``."""
    import textwrap

    m = record["machine"]
    return textwrap.fill(f"{name}: {m.get('gpu', m['processor'])}, {m['threads']} threads, torch {m['torch']}, "
                         f"{record['created']}. {record['note']}", width=width)


def time_ratios(record, dtype: str = "float32"):
    """A committed run's time ratios to DDIM per model, method and step count."""
    import pandas as pd

    timed = pd.DataFrame(record["rows"])
    return timed[timed.dtype == dtype].pivot_table(index=["model", "label"], columns="steps",
                                                   values="time_ratio_to_ddim")


def time_verdict(record, name: str) -> tuple[str, dict]:
    """The timing sentence of a committed CPU run, and its numbers: EDICT's, BDIA's and the lattice's time over
    DDIM's at the largest step count on the miniature SD UNet (or the first model), BDIA's own arithmetic per step."""
    import pandas as pd

    if record is None:
        return "No benchmark results are committed, so this page states no timing.", {}
    timed = pd.DataFrame(record["rows"])
    t32 = timed[timed.dtype == "float32"]
    big_n = t32.steps.max()
    at = t32[t32.steps == big_n].set_index(["model", "method"])
    model = "tiny-sd" if "tiny-sd" in set(t32.model) else t32.model.iloc[0]
    ratio = at.loc[model, "time_ratio_to_ddim"]
    lattice = next((m for m in ratio.index if "lattice" in m), None)
    numbers = {"edict": float(ratio["edict"]), "bdia": float(ratio["bdia:gamma=1.0"]),
               "lattice": float(ratio[lattice]) if lattice else float("nan"),
               "extra": float(at.loc[(model, "bdia:gamma=1.0"), "sampler_overhead_per_step"]
                              - at.loc[(model, "ddim"), "sampler_overhead_per_step"]),
               "calls": float(at.loc[(model, "edict"), "calls"] / at.loc[(model, "ddim"), "calls"])}
    slower = "more than" if numbers["edict"] > 1.5 else "less than"
    text = (f"On the {model} model at {big_n} steps (float32, median of {int(at.loc[(model, 'ddim'), 'repeats'])} "
            f"repeats on {name}), an EDICT round trip takes {numbers['edict']:.2f} times as long as DDIM's, {slower} "
            f"one and a half times, in line with its {numbers['calls']:.0f}x network calls; BDIA's takes "
            f"{numbers['bdia']:.2f} times DDIM's, with one call fewer"
            + (f", and BDIA on the lattice {numbers['lattice']:.2f} times" if lattice else
               " (this run has no lattice rows)")
            + f". BDIA's own arithmetic per step differs from DDIM's by {numbers['extra']:+.1%} of a DDIM step with "
            "the real network.")
    return text, numbers


def gpu_table(record):
    """The committed GPU check's round-trip rows: seconds, ratio to DDIM, error and peak memory per setting."""
    import pandas as pd

    rows = pd.DataFrame(record["round_trips"])
    columns = ["batch", "network_dtype", "latent_dtype", "label", "seconds_median", "time_ratio_to_ddim",
               "round_trip_error", "peak_gpu_memory_gib"]
    return rows[[c for c in columns if c in rows]].set_index(["batch", "network_dtype", "latent_dtype", "label"])


def gpu_verdict(record) -> str:
    """The GPU check in one sentence: BDIA's and EDICT's time against DDIM's on the SD-size UNet, and the lattice."""
    import pandas as pd

    if record is None:
        return ("No GPU run is committed: `python -m bdia bench --suite gpu` on a CUDA machine produces one, and this "
                "section shows it when its results file is in `benchmarks/results/`.")
    rows = pd.DataFrame(record["round_trips"])
    big = rows[rows.batch == rows.batch.max()]
    ratio = big.groupby("label")["time_ratio_to_ddim"].median()
    gpu = record["machine"].get("gpu", "a GPU")
    exact = record.get("lattice_bit_exact", {})
    if exact.get("deterministic") and exact.get("nondeterministic"):
        lattice = "bit-exact with and without deterministic algorithms"
    elif exact.get("deterministic"):
        lattice = "bit-exact under torch.use_deterministic_algorithms(True), and not without it"
    else:
        lattice = "not bit-exact, even with deterministic algorithms"
    return (f"On {gpu}, with the Stable Diffusion 1.5-size UNet at batch {int(rows.batch.max())}, a BDIA (γ = 1) round "
            f"trip takes {ratio.get('bdia (γ=1)', float('nan')):.2f} times DDIM's time and EDICT's "
            f"{ratio.get('edict', float('nan')):.2f} times (medians over the network and latent dtypes); the lattice "
            f"round trip is {lattice}.")


def glance(calls_bdia: int, calls_ddim: int, numbers: dict) -> str:
    """Chapter 6's finding in one sentence, for the results table of the introduction."""
    text = (f"A BDIA round trip of 50 steps costs {calls_bdia} network calls against DDIM's {calls_ddim} "
            "(the paper says 97)")
    if numbers:
        text += (f"; in the committed CPU run its round trip takes {numbers['bdia']:.2f} times DDIM's time and EDICT's "
                 f"{numbers['edict']:.2f} times")
    return text + "."
