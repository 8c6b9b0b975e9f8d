"""Chapter 5's gamma frontier: BDIA's edits over gamma, each with its round trip, against DDIM inversion's and
null-text inversion's, and what ``gamma="auto"`` picks.

Smaller gamma damps the leapfrog's parasitic mode (root ``-gamma``) that a prompt change excites, so edits read
as the target more often, until the inversion's division by gamma amplifies rounding beyond what the round trip
can hide. :func:`gamma_frontier` measures both sides on the digit pairs of the editing benchmark;
:func:`frontier_verdict` says, per guidance, which exact gamma edits best and how it compares with the baselines.
"""

from __future__ import annotations

import math

import torch

from . import join_names
from .editing import digit_edits
from .wording import FRESH, short_name

__all__ = ["EXACT", "gamma_frontier", "frontier_verdict", "best_exact_gamma", "control_verdict", "glance",
           "plot_frontier", "AUTO_FLOAT64"]

#: the round trip below which a recipe counts as exact in this chapter (the issue's bar)
EXACT = 1e-6
#: the label of ``gamma="auto"`` with a float64 copy of the network (the plain ``bdia (γ=auto)`` runs the float32 one)
AUTO_FLOAT64 = "bdia (γ=auto), float64 network"


def gamma_frontier(unet, classifier, images, sources, targets, schedule, num_steps: int, strength: float,
                   guidances, gammas):
    """BDIA's digit edits at each of ``gammas`` and with ``gamma="auto"`` (float64 latents; the float32 network, and
    for ``auto`` also a float64 copy of it), as :func:`bdia.apps.book.editing.digit_edits` measures them; the
    ``gamma`` column holds the gamma each run used."""
    import pandas as pd

    from ...diffusers import network_copy

    specs = tuple(f"bdia:gamma={g:g}" for g in gammas) + ("bdia:gamma=auto",)
    table, _ = digit_edits(unet, classifier, images, sources, targets, schedule, num_steps, strength, guidances,
                           specs=specs)
    wide, _ = digit_edits(network_copy(unet, torch.float64), classifier, images, sources, targets, schedule,
                          num_steps, strength, guidances, specs=("bdia:gamma=auto",))
    wide = wide[wide["method"] != FRESH].assign(method=AUTO_FLOAT64)
    table = pd.concat([table[table["method"] != FRESH], wide], ignore_index=True)
    return table


def _best_exact(group):
    exact = group[group["reconstruction error"] <= EXACT]
    if exact.empty:
        return None
    return exact.sort_values(["edit success", "feature distance"], ascending=[False, True]).iloc[0]


def frontier_verdict(frontier, edits) -> str:
    """Per guidance: the exact BDIA recipe whose edits are read as the target most often, against DDIM inversion and
    null-text inversion (from the benchmark table ``edits``), on both axes; and what ``gamma="auto"`` picked."""
    baselines = edits.set_index(["method", "guidance"])
    sentences = []
    for guidance, group in frontier.groupby("guidance", sort=True):
        best = _best_exact(group)
        if best is None:
            sentences.append(f"At guidance {guidance:g} no gamma tried inverts within {EXACT:g}.")
            continue
        text = (f"At guidance {guidance:g} the best exact BDIA edit is at γ = {best['gamma']:.3g} (round trip "
                f"{best['reconstruction error']:.0e}): read as the target {best['edit success']:.0%} of the time at "
                f"a distance of {best['feature distance']:.1f} from its source")
        if ("ddim", guidance) not in baselines.index:
            sentences.append(text + ".")
            continue
        ddim = baselines.loc[("ddim", guidance)]
        text += f", against DDIM inversion's {ddim['edit success']:.0%} at {ddim['feature distance']:.1f}"
        others = [f"{short_name(label)}'s {row['edit success']:.0%} at {row['feature distance']:.1f}"
                  for label in ("null-text", "ddpm-inversion") if (label, guidance) in baselines.index
                  for row in [baselines.loc[(label, guidance)]]]
        if others:
            text += f" and {join_names(others)}"
        wins = best["edit success"] >= ddim["edit success"] and best["feature distance"] < ddim["feature distance"]
        text += (": it beats DDIM inversion on both axes." if wins else
                 ": it does not beat DDIM inversion on both axes.")
        sentences.append(text)
    auto = frontier[frontier["method"].str.startswith("bdia (γ=auto")]
    if not auto.empty:
        chosen = auto.groupby("method")["gamma"].first()
        picked = chosen.get("bdia (γ=auto)", math.nan), chosen.get(AUTO_FLOAT64, math.nan)
        sentences.append(f"With gamma='auto' the rule picks γ = {picked[0]:.3g} for the float32 network and "
                         f"{picked[1]:.3g} for a float64 copy of it; their worst round trips are "
                         f"{auto['reconstruction error'].max():.0e}.")
    return " ".join(sentences)


def best_exact_gamma(frontier, guidance: float) -> float:
    """The gamma of the best exact BDIA edit at ``guidance`` (read as the target most often, then the closest to
    its source); NaN where none is exact."""
    best = _best_exact(frontier[frontier["guidance"] == guidance])
    return math.nan if best is None else float(best["gamma"])


def _split_control(label: str) -> tuple[str, str | None]:
    method, _, control = label.partition(" + ")
    return method, control or None


def control_verdict(controlled, edits, frontier) -> str:
    """What a control did to each method's edits (``controlled``: :func:`bdia.apps.book.editing.digit_edits` rows with
    a control, labelled ``"<method> + <control>"``), against the same method without it (from ``edits`` or
    ``frontier``); and whether the best exact controlled recipe beats DDIM inversion's plain edit on both axes."""
    import pandas as pd

    plain = pd.concat([edits, frontier], ignore_index=True).drop_duplicates(["method", "guidance"])
    plain = plain.set_index(["method", "guidance"])
    sentences = []
    for guidance, group in controlled.groupby("guidance", sort=True):
        changes, closer, lower = [], 0, 0
        control = None
        for _, row in group.iterrows():
            method, control = _split_control(row["method"])
            if (method, guidance) not in plain.index:
                continue
            before = plain.loc[(method, guidance)]
            closer += row["feature distance"] < before["feature distance"]
            lower += row["edit success"] < before["edit success"]
            changes.append(f"{short_name(method)} {before['edit success']:.0%} at {before['feature distance']:.1f} "
                           f"→ {row['edit success']:.0%} at {row['feature distance']:.1f}")
        if not changes:
            continue
        text = (f"At guidance {guidance:g}, {control} (twice the plain edit's network passes, the two branches in "
                f"one batch) brings "
                f"{'every' if closer == len(changes) else f'{closer} of {len(changes)}'} edit"
                f"{'' if closer == len(changes) else 's'} closer to {'its' if closer == len(changes) else 'their'} "
                f"source, and {'none' if not lower else f'{lower} of {len(changes)}'} "
                f"{'is' if lower == 1 else 'are'} read as the target less often (read as the target, and distance "
                f"to the source, without and with it: {join_names(changes)}).")
        exact = group[group["reconstruction error"] <= EXACT]
        ddim = plain.loc[("ddim", guidance)] if ("ddim", guidance) in plain.index else None
        if len(exact) and ddim is not None:
            best = exact.sort_values(["edit success", "feature distance"], ascending=[False, True]).iloc[0]
            wins = best["edit success"] >= ddim["edit success"] and best["feature distance"] < ddim["feature distance"]
            method, _ = _split_control(best["method"])
            text += (f" The best exact edit with it, {short_name(method)}'s, "
                     f"{'beats' if wins else 'does not beat'} DDIM inversion's plain edit on both axes.")
        sentences.append(text)
    return " ".join(sentences)


def glance(frontier, edits) -> str:
    """The edit side of chapter 5's finding, for the introduction's results table: at the largest guidance, the best
    exact BDIA edit against DDIM inversion's."""
    guidance = max(frontier["guidance"])
    best = _best_exact(frontier[frontier["guidance"] == guidance])
    ddim = edits[(edits["method"] == "ddim") & (edits["guidance"] == guidance)]
    if best is None or ddim.empty:
        return f"Editing at guidance {guidance:g}: no exact BDIA edit to compare."
    ddim = ddim.iloc[0]
    side = "closer to" if best["feature distance"] < ddim["feature distance"] else "no closer to"
    return (f"Editing at guidance {guidance:g}, the best exact BDIA (γ = {best['gamma']:.3g}) is read as the target "
            f"{best['edit success']:.0%} of the time against DDIM inversion's {ddim['edit success']:.0%}, and is "
            f"{side} its source.")


def plot_frontier(frontier, edits, profile: str, stamp: str, controlled=None):
    """Edit success against distance to the source, one panel per guidance: BDIA over gamma (filled where its round
    trip is exact, hollow where rounding won), ``gamma="auto"``, the benchmark's other methods as points, and the
    edits with a control (``controlled``) as diamonds in their method's colour."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_color, stamp_profile

    guidances = sorted(set(frontier["guidance"]))
    fig, axes = plt.subplots(1, len(guidances), figsize=(PAGE_WIDTH, 3.4), sharey=True, squeeze=False)
    for ax, guidance in zip(axes[0], guidances):
        group = frontier[frontier["guidance"] == guidance]
        curve = group[~group["method"].str.startswith("bdia (γ=auto")].sort_values("gamma")
        ax.plot(curve["feature distance"], curve["edit success"], "-", color=method_color("bdia"), lw=1)
        for _, row in curve.iterrows():
            exact = row["reconstruction error"] <= EXACT
            ax.plot(row["feature distance"], row["edit success"], "o", color=method_color("bdia"),
                    mfc=method_color("bdia") if exact else "white")
            ax.annotate(f"{row['gamma']:g}", (row["feature distance"], row["edit success"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        for label, marker in (("bdia (γ=auto)", "*"), (AUTO_FLOAT64, "P")):
            row = group[group["method"] == label]
            if not row.empty:
                ax.plot(row["feature distance"], row["edit success"], marker, color="black", ms=9,
                        label=f"γ=auto ({'float64' if label == AUTO_FLOAT64 else 'float32'} network)")
        others = edits[(edits["guidance"] == guidance) & edits["method"].isin(["ddim", "null-text", "negative-prompt",
                                                                               "ddpm-inversion", "edict", "obelm"])]
        for _, row in others.iterrows():
            ax.plot(row["feature distance"], row["edit success"], "s", color=method_color(row["method"]),
                    label=short_name(row["method"]))
        if controlled is not None:
            for _, row in controlled[controlled["guidance"] == guidance].iterrows():
                method, control = _split_control(row["method"])
                colour = method_color(method)
                ax.plot(row["feature distance"], row["edit success"], "D", color=colour, ms=5,
                        mfc=colour if row["reconstruction error"] <= EXACT else "white",
                        label=f"{short_name(method)} + {control}")
        ax.set_title(f"guidance {guidance:g}")
        ax.set_xlabel("distance to the source")
    axes[0][0].set_ylabel("read as the target")
    axes[0][0].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    stamp_profile(fig, profile, stamp)
    return fig
