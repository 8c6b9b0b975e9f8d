"""Chapter 2's experiments and sentences: trajectories of an exact 2-D flow, round trips of every method in float32 and
float64, how Gaussian the inverted latents are, bit-exact inversion on a lattice, and network calls."""

from __future__ import annotations

import numpy as np
import torch

from ...experiments import round_trip
from ...lattice import default_lattice
from ...methods import MethodSpec
from ...ode import solve_probability_flow
from ...samplers import invert, sample
from ...steps import lattice_round, obelm_gamma
from . import join_names

__all__ = ["glance", "SPECS", "flow_paths", "round_trips", "latent_normality", "normality_verdict", "round_trip_verdict",
           "error_table", "worst_errors", "floor_verdict", "edm_floor_verdict", "float32_network", "lattice_table",
           "obelm_coefficients", "call_table", "plot_flow", "plot_round_trips", "plot_errors", "gamma_key"]

#: the methods of the chapter: DDIM and the exact ones
SPECS = ("ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm", "bdia-edm:gamma=1.0")


def gamma_key(spec: MethodSpec) -> str:
    """The glue key of a method in this chapter: ``bdia_96`` for BDIA at gamma 0.96, ``edict_100`` for EDICT."""
    return f"{spec.method}_{round(100 * spec.options.get('gamma', 1.0))}"


def flow_paths(model, noise, schedule, num_steps: int, specs=("ddim", "bdia:gamma=1.0")):
    """The exact probability-flow trajectories from ``noise`` (200 points, DOP853) and each method's states."""
    grid = schedule.timesteps(num_steps)
    fine = torch.linspace(float(grid[0]), 0.0, 200, dtype=torch.float64)
    end, path = solve_probability_flow(model, noise.cpu(), schedule, float(grid[0]), float(grid[-1]),
                                       t_eval=fine[1:].tolist())
    exact = torch.stack([noise.cpu()] + path + [end])
    paths = {}
    for text in specs:
        spec = MethodSpec.parse(text)
        _, states = sample(model, noise, schedule, num_steps, spec.method, return_trajectory=True, **spec.options)
        paths[spec.label] = torch.stack(states).cpu()
    return exact, paths


def round_trips(model, data, schedule, num_steps: int, specs=SPECS) -> dict:
    """One round trip per method, by label."""
    trips = [round_trip(model, data, schedule, num_steps, text) for text in specs]
    return {trip.spec.label: trip for trip in trips}


def latent_normality(trips) -> dict:
    """The larger of the two coordinates' Kolmogorov-Smirnov statistics against N(0, 1) of each method's latents."""
    from scipy.stats import kstest

    return {label: max(kstest(trip.state.z[:, k].cpu().numpy(), "norm").statistic for k in range(2))
            for label, trip in trips.items()}


def normality_verdict(ks: dict) -> str:
    """Whose latents are closest to standard normal noise, and whose are furthest."""
    ranked = sorted(ks, key=ks.get)
    return (f"Closest to standard normal noise by this measure are the latents of {ranked[0]} ({ks[ranked[0]]:.3f}), "
            f"furthest those of {ranked[-1]} ({ks[ranked[-1]]:.3f})")


def round_trip_verdict(trips, bound: float = 1e-11) -> str:
    """Whether the exact methods reconstruct every point to rounding error."""
    exact = {label: trip.error for label, trip in trips.items() if trip.spec.record.exact}
    kept = [label for label, error in exact.items() if error < bound]
    if len(kept) == len(exact):
        return f"Every exact method reconstructs every point to rounding error (worst {max(exact.values()):.0e})"
    if kept:
        return f"{join_names(kept)} reconstruct every point to rounding error, the others do not"
    return "No exact method reconstructs the points to rounding error here"


def error_table(model, data, schedule, step_counts, specs=SPECS, dtypes=(torch.float32, torch.float64)):
    """Round-trip error and calls per method, dtype and step count."""
    import pandas as pd

    rows = []
    for dtype in dtypes:
        for text in specs:
            for n in step_counts:
                trip = round_trip(model, data.to(dtype), schedule, n, text)
                rows.append({"method": trip.spec.label, "dtype": str(dtype).removeprefix("torch."), "steps": n,
                             "round-trip error": trip.error, "calls": trip.calls})
    return pd.DataFrame(rows)


def worst_errors(errors):
    """The worst round trip of each method over the step counts, per dtype."""
    return errors.groupby(["method", "dtype"], sort=False)["round-trip error"].max().unstack()


def floor_verdict(worst, bound: float = 1e-11) -> str:
    """Which exact methods stay at float64's rounding floor at every step count."""
    exact = [label for label in worst.index if label != "ddim"]
    kept = [label for label in exact if worst.loc[label, "float64"] < bound]
    if len(kept) == len(exact):
        return "every exact method stays at the rounding floor"
    return f"{join_names(kept, empty='no exact method')} stay at the rounding floor"


def edm_floor_verdict(worst) -> str:
    """BDIA-EDM's float32 floor against BDIA's."""
    ratio = worst.loc["bdia-edm (γ=1)", "float32"] / worst.loc["bdia (γ=1)", "float32"]
    return f"{'higher' if ratio > 1 else 'no higher'} ({ratio:.3g} times BDIA's in float32)"


def float32_network(model):
    """The exact ``model`` behind float32 inputs and outputs, like a float32 network."""
    return lambda z, t: model(z.float().double(), t).float().to(z.dtype)


def lattice_table(network, data, schedule, num_steps: int = 50, dtypes=(torch.float32, torch.float64)):
    """BDIA (gamma = 1) round trips with and without the lattice, per latent dtype: the largest difference from the
    (lattice-rounded) input and whether the reconstruction is bit-identical."""
    import pandas as pd

    rows = []
    for dtype in dtypes:
        spacing = default_lattice(dtype, schedule, num_steps)
        x = lattice_round(data.to(dtype), spacing)  # the data, on the lattice
        for use in (False, True):
            state = invert(network, x, schedule, num_steps, "bdia", lattice=use or None)
            rec = sample(network, state, schedule, num_steps, "bdia")
            rows.append({"latents": str(dtype).removeprefix("torch."),
                         "lattice": f"2^{int(np.log2(spacing))}" if use else "none",
                         "max |reconstruction - x0|": float((rec - x).abs().max()),
                         "bit-identical (torch.equal)": bool(torch.equal(rec, x))})
    return pd.DataFrame(rows).set_index(["latents", "lattice"])


def obelm_coefficients(schedule, num_steps: int = 50) -> list[float]:
    """O-BELM's coefficient of the carried state at every step of the grid (BDIA's gamma is 1 there)."""
    lv = [schedule.level(float(t)) for t in schedule.timesteps(num_steps)]
    return [obelm_gamma(lv[j - 1], lv[j], lv[j + 1]) for j in range(1, num_steps)]


def call_table(model, data, schedule, step_counts, specs=SPECS):
    """Network calls of a round trip per method and step count: to invert, to reconstruct, in all."""
    import pandas as pd

    rows = []
    for n in step_counts:
        for text in specs:
            trip = round_trip(model, data, schedule, n, text)
            rows.append({"steps N": n, "method": trip.spec.label, "invert": trip.invert_calls,
                         "reconstruct": trip.reconstruct_calls, "round trip": trip.calls})
    return pd.DataFrame(rows).set_index(["steps N", "method"])


def plot_flow(data, exact, paths, profile: str, num_steps: int):
    """The exact flow and each method's trajectories over the data."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    fig, axes = plt.subplots(1, len(paths), figsize=(PAGE_WIDTH, 3.4), sharex=True, sharey=True)
    for ax, (label, path) in zip(np.atleast_1d(axes), paths.items()):
        ax.scatter(*data.cpu().T, s=3, color="#bbbbbb", label="data")
        style = method_style(label)
        for j in range(path.shape[1]):
            ax.plot(exact[:, j, 0], exact[:, j, 1], color="black", lw=0.7, alpha=0.6,
                    label="exact flow" if j == 0 else None)
            ax.plot(path[:, j, 0], path[:, j, 1], marker=style["marker"], ms=2.5, lw=0.8, color=style["color"],
                    alpha=0.8, label=f"{label}, {num_steps} steps" if j == 0 else None)
        ax.set(title=label, xlabel="$z_1$", aspect="equal")
        ax.legend(loc="lower left")
    np.atleast_1d(axes)[0].set_ylabel("$z_2$")
    stamp_profile(fig, profile, "exact 2-D mixture, SD schedule")
    return fig


def plot_round_trips(data, trips, labels, profile: str, num_steps: int):
    """Reconstructions (top) and inverted latents (bottom) of the methods ``labels``."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    fig, axes = plt.subplots(2, len(labels), figsize=(PAGE_WIDTH, 3.6), height_ratios=[1, 1.3])
    for col, label in enumerate(labels):
        trip = trips[label]
        rec = trip.reconstruction.cpu()
        color = method_style(label)["color"]
        ax = axes[0, col]
        ax.scatter(*data.cpu().T, s=3, color="#d0d0d0")
        for a, b in zip(data.cpu()[:80], rec[:80]):
            ax.plot([a[0], b[0]], [a[1], b[1]], color=color, lw=0.6)
        ax.scatter(*rec.T, s=3, color=color)
        ax.set_title(f"{label}\nerror {trip.error:.1e}", fontsize=8)
        ax.set(aspect="equal", xticks=[], yticks=[])
        ax = axes[1, col]
        ax.scatter(*trip.state.z.cpu().T, s=2, color=color)
        ax.add_patch(plt.Circle((0, 0), 2.0, fill=False, ls=":", color="k"))
        ax.set(aspect="equal", xlim=(-4, 4), ylim=(-4, 4), xticks=[-2, 0, 2], yticks=[-2, 0, 2])
    axes[0, 0].set_ylabel("reconstructions", fontsize=8)
    axes[1, 0].set_ylabel("latents $z_N$", fontsize=8)
    stamp_profile(fig, profile, f"{num_steps} steps, float64")
    return fig


def plot_errors(errors, step_counts, profile: str):
    """Round-trip error against steps, float32 and float64 side by side, with machine epsilon."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.2), sharey=True)
    for ax, dtype in zip(axes, ["float32", "float64"]):
        for label in dict.fromkeys(errors.method):
            sub = errors[(errors.dtype == dtype) & (errors.method == label)]
            ax.loglog(sub["steps"], sub["round-trip error"], ms=3, label=label, **method_style(label))
        eps = np.finfo(getattr(np, dtype)).eps
        ax.axhline(eps, color="k", lw=0.6, ls=":")
        ax.text(step_counts[0], eps * 1.6, "machine epsilon", fontsize=7)
        ax.set(title=dtype, xlabel="steps N")
    axes[0].set_ylabel("relative round-trip error")
    axes[1].legend(loc="center right", fontsize=7)
    stamp_profile(fig, profile, "exact 2-D mixture, SD schedule")
    return fig


def glance(worst, lattice, best_ddim: float) -> str:
    """Chapter 2's finding in one sentence, for the results table of the introduction."""
    exact = [label for label in worst.index if label != "ddim"]
    f64 = worst.loc[exact, "float64"].max()
    bit = bool(lattice["bit-identical (torch.equal)"].xs("none", level="lattice").eq(False).all()
               and lattice.drop(index="none", level="lattice")["bit-identical (torch.equal)"].all())
    return (f"{'Confirmed' if f64 < 1e-11 else 'Not confirmed'}: every exact method returns the data to rounding error "
            f"in float64 (worst {f64:.0e})" + (", and BDIA on a lattice bit for bit" if bit else "")
            + f"; DDIM inversion misses by {best_ddim:.1e} at best.")
