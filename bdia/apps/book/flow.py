"""Chapter 7's experiments and sentences: BDIA and the rectified-flow solvers on an exact 2-D flow and on the
miniature (or real) SD3 and FLUX pipelines. Each function returns a table the chapter shows; each ``*_verdict``
turns such a table into the sentence the chapter prints, so the sentence follows the numbers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ... import FlowMatchSchedule, MethodSpec, from_velocity, invert, sample
from ...exactness import ExactnessWarning
from ...experiments import relative_error
from ...ode import solve_flow
from ...steps import lattice_round
from ...toy import two_moons_mixture
from . import join_names
from .wording import cap, short_name

__all__ = ["glance", "ACCURACY_SPECS", "exact_flow", "accuracy", "fitted_orders", "accuracy_verdict", "round_trips",
           "round_trip_verdict", "parasitic_growth", "parasitic_verdict", "pipeline_round_trips", "pipeline_summary",
           "pipeline_verdict", "plot_accuracy", "plot_pipeline", "SAMPLING_SPECS", "trained_flow_sampling",
           "trained_flow_summary", "trained_flow_verdict", "plot_trained_flow"]

#: the methods of the accuracy study: Euler (= DDIM), BDIA at four gammas, O-BELM, RF-Solver, FireFlow, EDICT
ACCURACY_SPECS = ("ddim", "bdia:gamma=1.0", "bdia:gamma=0.96", "bdia:gamma=0.8", "bdia:gamma=0.5", "obelm",
                  "midpoint", "fireflow", "edict")


#: the methods sampled from the trained digits flow: Euler, BDIA at three gammas, O-BELM, RF-Solver and FireFlow
SAMPLING_SPECS = ("ddim", "bdia:gamma=1.0", "bdia:gamma=0.8", "bdia:gamma=0.5", "obelm", "midpoint", "fireflow")


def exact_flow(shift: float = 3.0, std: float = 0.08):
    """``(schedule, mixture, velocity model)``: the two-moons mixture under a flow with SD3's ``shift``."""
    schedule = FlowMatchSchedule(shift=shift)
    mixture = two_moons_mixture(8, std=std)
    return schedule, mixture, mixture.velocity_model(schedule)


def accuracy(model, noise, schedule, specs=ACCURACY_SPECS, budgets=(16, 32, 64, 128)):
    """Global error at ``t = 0`` against the exact flow's solution, per method and network-call budget: one row per
    (method, budget) with the steps that fit the budget, the calls made and the relative error."""
    import pandas as pd

    exact = solve_flow(model, noise, 1.0, 0.0)
    rows = []
    for text in specs:
        spec = MethodSpec.parse(text)
        for calls in budgets:
            steps = spec.record.steps_for_budget(calls)
            out = sample(model, noise, schedule, steps, spec.method, **spec.options)
            rows.append({"method": spec.label, "budget": calls, "steps": steps,
                         "calls": spec.record.network_calls(steps), "error": relative_error(out, exact)})
    return pd.DataFrame(rows)


def fitted_orders(table):
    """The slope of log(error) against log(calls), per method: the observed order of convergence."""
    def slope(group):
        return -np.polyfit(np.log(group["calls"]), np.log(group["error"]), 1)[0]

    return table.groupby("method", sort=False)[["calls", "error"]].apply(slope).rename("order")


def _name(label: str) -> str:
    names = {"ddim": "Euler", "midpoint": "the midpoint rule (RF-Solver)", "fireflow": "FireFlow", "obelm": "O-BELM",
             "edict": "EDICT"}
    return names.get(label, label.replace("bdia (γ=", "BDIA (γ = "))


def _names(labels) -> str:
    """Method labels for a sentence, BDIA's gammas (without the lattice) named as one group."""
    labels = list(labels)
    bdia = [m for m in labels if m.startswith("bdia (γ=") and "lattice" not in m]
    if len(bdia) < 2:
        return join_names(_name(m) for m in labels)
    gammas = [m.split("γ=")[1].rstrip(")") for m in bdia]
    return join_names([f"BDIA at γ = {join_names(gammas)}"] + [_name(m) for m in labels if m not in bdia])


def _gammas(labels) -> str:
    values = sorted(float(m.split("γ=")[1].rstrip(")")) for m in labels)
    return f"γ = {values[0]:g}" if len(values) == 1 else f"γ from {values[0]:g} to {values[-1]:g}"


def accuracy_verdict(table, orders) -> str:
    """The most and least accurate method at the widest budget, the orders of BDIA against the others, and where BDIA
    loses."""
    widest = table["budget"].max()
    at = table[table["budget"] == widest].set_index("method")["error"]
    best, worst = at.idxmin(), at.idxmax()
    bdia = [m for m in orders.index if m.startswith("bdia")]
    second_bdia = [m for m in bdia if orders[m] > 1.45]
    others = [m for m in orders.index if m not in bdia and orders[m] > 1.45]
    text = (f"At {widest} network calls {_name(best)} is the most accurate ({at[best]:.1e}) and {_name(worst)} the "
            f"least ({at[worst]:.1e}). ")
    if second_bdia:
        low, high = min(orders[m] for m in second_bdia), max(orders[m] for m in second_bdia)
        text += (f"BDIA at {_gammas(second_bdia)} converges at about second order (fitted {low:.2f} to {high:.2f}), "
                 f"like {join_names(_name(m) for m in others)}; Euler at {orders['ddim']:.2f}. ")
    losing = [m for m in bdia if at[m] > at[best]]
    if len(losing) == len(bdia):
        text += (f"At equal calls BDIA is less accurate than {_name(best)} at every γ: on a flow its exactness, not "
                 "its accuracy, is what it offers.")
    return text


def round_trips(model, x0, schedule, specs, num_steps: int = 28, dtypes=(torch.float64, torch.float32)):
    """Invert and reconstruct ``x0`` with each method: network calls of each half and the relative error per dtype."""
    import pandas as pd

    rows = []
    for text in specs:
        spec = MethodSpec.parse(text)
        row = {"method": spec.label, "exact": spec.record.exact,
               "invert calls": spec.record.network_calls(num_steps, "invert"),
               "reconstruct calls": spec.record.network_calls(num_steps, "reconstruct")}
        for dtype in dtypes:
            data = x0.to(dtype)
            with warnings.catch_warnings():  # a low gamma is shown for its amplification: its warning is the point
                warnings.simplefilter("ignore", ExactnessWarning)
                state = invert(model, data, schedule, num_steps, spec.method, **spec.options)
            lattice = state.options.get("lattice")
            target = data if lattice is None else lattice_round(data, lattice)
            row[str(dtype).removeprefix("torch.")] = relative_error(sample(model, state, schedule, num_steps,
                                                                           spec.method), target)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def round_trip_verdict(table, bound: float = 1e-12) -> str:
    """Whether the exact methods return the data to rounding error in float64, which of them do not, and by how much
    the approximate ones miss."""
    exact = table[table["exact"]]
    kept = exact[exact["float64"] < bound]
    lost = exact[exact["float64"] >= bound]
    approximate = table[~table["exact"]]["float64"]
    text = (f"{'All ' if lost.empty else ''}{len(kept)} of the {len(exact)} exact methods reconstruct to rounding "
            f"error in float64 (worst {kept['float64'].max():.0e}")
    on_lattice = [m for m in kept.index if "lattice" in m and kept.loc[m, "float64"] == 0]
    text += ", and exactly 0 on the lattice)" if on_lattice else ")"
    if not lost.empty:
        text += "; " + join_names(f"{m} loses digits to its 1/γ amplification ({e:.1e})"
                                  for m, e in lost["float64"].items())
    if len(approximate):
        text += (f"; {_names(approximate.index)} miss by {approximate.min():.1e} to "
                 f"{approximate.max():.1e}")
    return text + "."


def parasitic_growth(hc_values=(0.05, 0.1, 0.2, 0.4), num_steps: int = 40):
    """BDIA (gamma = 1) on ``dz/dt = c z`` over a uniform grid: the measured growth per step of the alternating
    error, beside the parasitic root ``|r| = hc + sqrt(1 + (hc)^2)`` of the leapfrog recursion."""
    import pandas as pd

    schedule = FlowMatchSchedule(base_sigmas=lambda n: np.linspace(1.0, 1.0 / n, n))
    ts = schedule.timesteps(num_steps)
    h = float(ts[0] - ts[1])
    rows = []
    for hc in hc_values:
        c = hc / h
        _, states = sample(from_velocity(lambda z, t, c=c: c * z), torch.ones(1, 1, dtype=torch.float64), schedule,
                           num_steps, "bdia", gamma=1.0, return_trajectory=True)
        error = torch.stack([z.flatten()[0] for z in states]) - torch.exp(c * (ts - 1.0))
        tail = error[num_steps // 2:]
        alternates = bool(torch.all(torch.sign(tail[1:]) * torch.sign(tail[:-1]) < 0))
        measured = float((tail[-1] / tail[0]).abs() ** (1 / (len(tail) - 1)))
        rows.append({"h c": hc, "measured growth per step": measured, "theory |r|": hc + math.sqrt(1 + hc * hc),
                     "alternates": alternates, "error at t = 0": float(error[-1].abs())})
    return pd.DataFrame(rows).set_index("h c")


def parasitic_verdict(table) -> str:
    """How far the measured growth agrees with the theory, and that it grows."""
    deviation = ((table["measured growth per step"] - table["theory |r|"]).abs() / table["theory |r|"]).max()
    alternating = bool(table["alternates"].all())
    return (f"The error {'alternates in sign at every' if alternating else 'does not alternate at every'} "
            f"step and grows by {table['measured growth per step'].min():.3f} to "
            f"{table['measured growth per step'].max():.3f} per step, within {deviation:.1%} of the parasitic root; "
            "where the flow contracts, the leapfrog amplifies the alternating mode instead of damping it.")


def pipeline_round_trips(edit, image, prompt: str, target_prompt: str, specs, num_steps: int, strength: float,
                         guidance_scale: float, latent_dtype=torch.float64, size=None, **kwargs):
    """Round trips and edits through a :class:`~bdia.diffusers.BDIAFlowEditPipeline`: a table of the latent
    round-trip error and the calls of each method, and the decoded reconstructions and edits."""
    import pandas as pd

    from ...diffusers import encode_image

    source = encode_image(edit.pipe, image, dtype=latent_dtype, size=size)
    rows, images = [], {}
    for text in specs:
        spec = MethodSpec.parse(text)
        state = edit.invert(source, prompt, num_steps, strength=strength, guidance_scale=guidance_scale,
                            method=spec.method, latent_dtype=latent_dtype, **spec.options, **kwargs)
        calls = edit.num_network_calls
        rec = edit(inversion=state, output_type="latent").images
        calls += edit.num_network_calls
        edited = edit(target_prompt, inversion=state, output_type="latent").images
        rows.append({"method": spec.label, "latent round-trip error": relative_error(rec, source),
                     "calls (invert + regenerate)": calls})
        images[spec.label] = (edit.decode(rec)[0], edit.decode(edited)[0])
    return pd.DataFrame(rows).set_index("method"), images


def pipeline_summary(tables):
    """One table of the pipelines' round trips: the latent error per family, and the calls (the same in each)."""
    import pandas as pd

    errors = pd.DataFrame({family: t["latent round-trip error"] for family, t in tables.items()})
    return errors.assign(**{"calls (invert + regenerate)": next(iter(tables.values()))["calls (invert + regenerate)"]})


def pipeline_verdict(table, bound: float = 1e-10) -> str:
    """Which methods return the latent to rounding error through every pipeline, what the others miss by, and what
    each costs in calls."""
    families = [c for c in table.columns if not c.startswith("calls")]
    worst = table[families].max(axis=1)
    exact, missed = worst[worst < bound], worst[worst >= bound]
    calls = table["calls (invert + regenerate)"]
    text = (f"Through {join_names(families)} with guidance, {_names(exact.index)} return the "
            f"source latent to rounding error (worst {exact.max():.0e}, float64 latents)")
    if len(missed):
        text += f", while {_names(missed.index)} miss by {missed.min():.1e} to {missed.max():.1e}"
    cheapest = calls[exact.index].idxmin() if len(exact) else None
    if cheapest is not None:
        text += (f". An exact edit costs {_name(cheapest)} {calls[cheapest]} network calls"
                 + (f", EDICT {calls['edict']}" if "edict" in calls.index else ""))
    return text + "."


def plot_accuracy(table, orders, profile: str):
    """Global error against network calls, one line per method, the fitted order in the legend."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.6))
    for label, group in table.groupby("method", sort=False):
        ax.loglog(group["calls"], group["error"], label=f"{_name(label)} ({orders[label]:.2f})",
                  **method_style(label))
    ax.set(xlabel="network calls", ylabel="relative error at t = 0")
    ax.legend(ncol=2, title="method (fitted order)", fontsize=7.5)
    stamp_profile(fig, profile, "exact 2-D flow (two moons), SD3's shift 3")
    return fig


def plot_pipeline(rows, source, profile: str, weights: str):
    """Per family, the input and each method's reconstruction and edit (``rows``: family -> images by method)."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, stamp_profile

    methods = list(next(iter(rows.values())))
    fig, axes = plt.subplots(2 * len(rows), len(methods) + 1, figsize=(PAGE_WIDTH, 1.6 * 2 * len(rows) + 0.4))
    for k, (family, images) in enumerate(rows.items()):
        top, bottom = axes[2 * k], axes[2 * k + 1]
        top[0].imshow(source)
        top[0].set_title("input", fontsize=8)
        bottom[0].axis("off")
        top[0].set_ylabel(f"{family}\nreconstruction", fontsize=8)
        bottom[1].set_ylabel("edit", fontsize=8)
        for j, method in enumerate(methods, start=1):
            top[j].imshow(images[method][0])
            bottom[j].imshow(images[method][1])
            top[j].set_title(_name(method), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    stamp_profile(fig, profile, f"weights: {weights}")
    return fig


def glance(trips, pipeline_table, bound: float = 1e-10, sampled=None) -> str:
    """Chapter 7's finding in one sentence, for the results table of the introduction (and, given the trained flow's
    samples ``sampled``, a second: how BDIA's best γ samples against Euler at the smallest budget)."""
    families = [c for c in pipeline_table.columns if not c.startswith("calls")]
    bdia = float(pipeline_table.loc["bdia (γ=1)", families].max())
    exact = trips.loc["bdia (γ=1)", "float64"] < 1e-12
    missed = [_name(m) for m in ("midpoint", "fireflow") if m in trips.index and trips.loc[m, "float64"] >= 1e-6]
    text = (f"Beyond the paper: BDIA inverts rectified flows {'exactly' if exact and bdia < bound else 'approximately'} "
            f"at one velocity call per step (through the {join_names(families)} pipelines to {bdia:.0e})"
            + (f", where {join_names(missed)} miss{'es' if len(missed) == 1 else ''} by far more." if missed else "."))
    if sampled is None:
        return text
    summary = trained_flow_summary(sampled)
    budget = int(summary["budget"].min())
    at = summary[summary["budget"] == budget].set_index("method")
    gammas = at[at.index.str.startswith("bdia")]
    best, euler = gammas["Fréchet distance"].idxmin(), at.loc["ddim"]
    margin = 2 * max(gammas.loc[best, "seed spread"], euler["seed spread"])
    diff = gammas.loc[best, "Fréchet distance"] - euler["Fréchet distance"]
    how = "better than" if diff < -margin else "worse than" if diff > margin else "as well as"
    return text + f" On a trained digits flow its best γ samples {how} Euler at {budget} calls."


def trained_flow_sampling(unet, specs=SAMPLING_SPECS, budgets=(10, 20), per_class: int = 100, seeds=(0, 1, 2),
                          schedule=None):
    """Samples of the digits flow (``unet``, through :class:`bdia.diffusers.UNetVelocityModel`, unguided) with each
    method at each network-call budget, from the same noise per seed (``per_class`` digits of each class), scored
    by the shipped digit classifier (:func:`bdia.apps.fid.features.digit_sample_scores`). One row per (method,
    budget, seed):
    the steps that fit the budget, the calls made, the Fréchet distance to the digits and the share read as their
    label; ``samples`` holds the first seed's images at the smallest budget per method."""
    import pandas as pd

    from ...diffusers import UNetVelocityModel
    from .. import digits
    from ..fid.features import digit_sample_scores

    schedule = schedule or FlowMatchSchedule()
    classifier, _ = digits.load_classifier()
    labels = torch.arange(digits.NUM_CLASSES).repeat_interleave(per_class)
    model = UNetVelocityModel(unet, labels, num_train_timesteps=digits.FLOW_TRAIN_TIMESTEPS)
    rows, samples, reference = [], {}, None
    for seed in seeds:
        noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        for text in specs:
            spec = MethodSpec.parse(text)
            for calls in budgets:
                steps = spec.record.steps_for_budget(calls)
                out = sample(model, noise, schedule, steps, spec.method, **spec.options)
                scores = digit_sample_scores(out, labels, classifier, reference)
                reference = scores["reference"]
                rows.append({"method": spec.label, "budget": calls, "steps": steps,
                             "calls": spec.record.network_calls(steps), "seed": seed,
                             "frechet distance": scores["frechet distance to the digits"],
                             "read as their label": scores["read as their label"]})
                if seed == seeds[0] and calls == min(budgets):
                    samples[spec.label] = out
    return pd.DataFrame(rows), samples


def trained_flow_summary(table):
    """Per method and budget: the Fréchet distance's mean over the seeds and its standard deviation, and the share
    read as their label."""
    grouped = table.groupby(["method", "budget"], sort=False)
    summary = grouped.agg(fd=("frechet distance", "mean"), spread=("frechet distance", "std"),
                          read=("read as their label", "mean")).reset_index()
    return summary.rename(columns={"fd": "Fréchet distance", "spread": "seed spread",
                                   "read": "read as their label"})


def trained_flow_verdict(table) -> str:
    """Per budget, which BDIA gammas sample better than Euler by more than twice the seed spread (the standard
    deviation over the noise seeds, largest of the two methods compared), and where O-BELM, RF-Solver's midpoint
    rule and FireFlow stand against Euler by the same rule."""
    summary = trained_flow_summary(table).set_index(["method", "budget"])
    sentences = []
    for budget in sorted(set(table["budget"])):
        at = summary.xs(budget, level="budget")
        euler = at.loc["ddim"]

        def against(label):
            margin = 2 * max(at.loc[label, "seed spread"], euler["seed spread"])
            diff = at.loc[label, "Fréchet distance"] - euler["Fréchet distance"]
            return "better" if diff < -margin else "worse" if diff > margin else "even"

        gammas = [label for label in at.index if label.startswith("bdia")]
        verdicts = {label: against(label) for label in at.index if label != "ddim"}
        better = [label for label in gammas if verdicts[label] == "better"]
        worse = [label for label in gammas if verdicts[label] == "worse"]
        text = (f"At {budget} calls Euler reaches a Fréchet distance of {euler['Fréchet distance']:.2f} "
                f"(seed spread {euler['seed spread']:.2f}); ")
        if better:
            text += f"BDIA beats it by more than twice the seed spread at {_gamma_list(better)}"
            text += f" and loses to it at {_gamma_list(worse)}" if worse else ""
        else:
            text += "no BDIA γ tried beats it by more than twice the seed spread"
            text += f", and BDIA at {_gamma_list(worse)} does worse" if worse else ""
        others = [label for label in ("obelm", "midpoint", "fireflow") if label in verdicts]
        groups = {kind: [_name(label) for label in others if verdicts[label] == kind]
                  for kind in ("better", "even", "worse")}
        parts = [f"{join_names(names)} {'do' if len(names) > 1 else 'does'} "
                 + {"better": "better", "even": "as well, within the noise", "worse": "worse"}[kind]
                 for kind, names in groups.items() if names]
        sentences.append(text + (". " + cap("; ".join(parts)) if parts else "") + ".")
    return " ".join(sentences)


def _gamma_list(labels) -> str:
    return "γ = " + join_names(f"{g:g}" for g in sorted(float(m.split("γ=")[1].rstrip(")")) for m in labels))


def plot_trained_flow(table, samples, profile: str, shown: int = 12):
    """Fréchet distance against the budget (mean over seeds, bars: the seed spread), and the first samples of each
    method at the smallest budget."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    summary = trained_flow_summary(table)
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.3), width_ratios=[1.15, 1])
    for label, group in summary.groupby("method", sort=False):
        axes[0].errorbar(group["budget"], group["Fréchet distance"], yerr=group["seed spread"], ms=4, capsize=2,
                         label=_name(label) if not label.startswith("bdia") else label, **method_style(label))
    budgets = sorted(set(table["budget"]))
    axes[0].set(yscale="log", xlabel="network calls", ylabel="Fréchet distance", xticks=budgets)
    axes[0].set_title("trained digits flow: Fréchet distance", fontsize=8)
    axes[0].legend(fontsize=6, ncol=2, loc="upper right")
    rows = []
    for label, images in samples.items():
        images = images[::max(1, len(images) // shown)][:shown, 0].float().clamp(-1, 1)
        rows.append(torch.cat(list(torch.nn.functional.pad(images, (1, 1, 1, 1), value=-1.0)), dim=1))
    axes[1].imshow(torch.cat(rows, dim=0), cmap="gray_r")
    axes[1].set_yticks([(i + 0.5) * rows[0].shape[0] for i in range(len(rows))], list(samples), fontsize=6.5)
    axes[1].set_xticks([])
    axes[1].grid(False)
    axes[1].set_title(f"samples at {min(budgets)} calls\n(same noise in each column)", fontsize=8)
    stamp_profile(fig, profile, "digits flow trained by bdia")
    return fig
