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

from ...errors import NonFiniteError
from ...methods import MethodSpec
from . import join_names
from .editing import digit_edits
from .wording import FRESH, cap, short_name

__all__ = ["EXACT", "BASELINES", "AUTO_FLOAT64", "gamma_frontier", "frontier_runs", "panels", "beats", "best_exact",
           "frontier_verdict", "best_exact_gamma", "pareto_labels", "front_verdict", "recipe_costs", "control_verdict", "glance",
           "plot_frontier"]

#: the round trip below which a recipe counts as exact in this chapter (the issue's bar)
EXACT = 1e-6
#: the label of ``gamma="auto"`` with a float64 copy of the network (the plain ``bdia (γ=auto)`` runs the float32 one)
AUTO_FLOAT64 = "bdia (γ=auto), float64 network"


def gamma_frontier(unet, classifier, images, sources, targets, schedule, num_steps: int, strength: float,
                   guidances, gammas, ps=()):
    """BDIA's digit edits at each of ``gammas`` and with ``gamma="auto"`` (float64 latents; the float32 network, and
    for ``auto`` also a float64 copy of it), and EDICT's at each of its mixing weights ``ps``, as
    :func:`bdia.apps.book.editing.digit_edits` measures them; the ``gamma`` and ``p`` columns hold the values each
    run used."""
    import pandas as pd

    from ...diffusers import network_copy

    specs = tuple(f"bdia:gamma={g:g}" for g in gammas) + ("bdia:gamma=auto",)
    table, _ = digit_edits(unet, classifier, images, sources, targets, schedule, num_steps, strength, guidances,
                           specs=specs)
    tables = [table]
    for p in ps:  # EDICT's inverse divides by p at every step: a small p can overflow, which is a result too
        try:
            tables.append(digit_edits(unet, classifier, images, sources, targets, schedule, num_steps, strength,
                                      guidances, specs=(f"edict:p={p:g}",))[0])
        except NonFiniteError:
            tables.append(pd.DataFrame([{"method": MethodSpec.parse(f"edict:p={p:g}").label, "steps": num_steps,
                                         "guidance": g, "reconstruction error": math.inf, "p": p}
                                        for g in guidances]))
    table = pd.concat(tables, ignore_index=True)
    wide, _ = digit_edits(network_copy(unet, torch.float64), classifier, images, sources, targets, schedule,
                          num_steps, strength, guidances, specs=("bdia:gamma=auto",))
    wide = wide[wide["method"] != FRESH].assign(method=AUTO_FLOAT64)
    table = pd.concat([table[table["method"] != FRESH], wide], ignore_index=True)
    return table


#: the methods a frontier panel sets beside BDIA's curve
BASELINES = ("ddim", "null-text", "negative-prompt", "ddpm-inversion", "edict", "obelm")


def frontier_runs(unet, classifier, images, sources, targets, schedule, strength: float, panels, gammas, edits,
                  ps=(), baselines=BASELINES):
    """The frontier's panels, each ``(steps, guidance)``: :func:`gamma_frontier` per step count (EDICT at each of
    ``ps`` too), and the baselines
    (``baselines``, by default :data:`BASELINES`) of each panel, taken from the benchmark table ``edits`` where it ran that step count and
    measured here where it did not. Returns ``(frontier, baselines)``."""
    import pandas as pd

    fronts, measured = [], [edits[edits["method"].isin(baselines)]]
    for steps in sorted({int(n) for n, _ in panels}):
        guidances = sorted({float(g) for n, g in panels if int(n) == steps})
        fronts.append(gamma_frontier(unet, classifier, images, sources, targets, schedule, steps, strength,
                                     guidances, gammas, ps))
        have = set(edits.loc[edits["steps"] == steps, "guidance"])
        missing = [g for g in guidances if g not in have]
        if missing:
            table, _ = digit_edits(unet, classifier, images, sources, targets, schedule, steps, strength, missing,
                                   specs=baselines)
            measured.append(table[table["method"] != FRESH])
    return pd.concat(fronts, ignore_index=True), pd.concat(measured, ignore_index=True)


def panels(table):
    """``(steps or None, guidance, rows)`` for each panel of a frontier table, in order."""
    if "steps" not in table:
        return [(None, guidance, group) for guidance, group in table.groupby("guidance", sort=True)]
    return [(int(steps), guidance, group) for (steps, guidance), group in table.groupby(["steps", "guidance"],
                                                                                        sort=True)]


def _row(table, method: str, steps, guidance):
    """The row of ``method`` in ``table`` at that panel, or None."""
    match = (table["method"] == method) & (table["guidance"] == guidance)
    if steps is not None and "steps" in table:
        match &= table["steps"] == steps
    return table[match].iloc[0] if match.any() else None


def _where(steps, guidance) -> str:
    return f"guidance {guidance:g}" + ("" if steps is None else f" and {steps} steps")


def _bdia(group):
    """BDIA's rows of a frontier table (its other curve is EDICT's over p)."""
    return group[group["method"].str.startswith("bdia")]


def _edict(group):
    return group[group["method"].str.startswith("edict")]


def beats(row, other) -> bool:
    """Whether ``row``'s edits win on both axes against ``other``'s: read as the target at least as often, and
    closer to their source."""
    return row["edit success"] >= other["edit success"] and row["feature distance"] < other["feature distance"]


def best_exact(group):
    """The row of ``group`` within the round-trip bar (:data:`EXACT`) read as the target most often, then the closest
    to its source; None where none is exact."""
    exact = group[group["reconstruction error"] <= EXACT]
    if exact.empty:
        return None
    return exact.sort_values(["edit success", "feature distance"], ascending=[False, True]).iloc[0]


def frontier_verdict(frontier, edits) -> str:
    """Per panel (guidance, and step count where the table has one): the exact BDIA recipe whose edits are read as the
    target most often, against DDIM inversion, null-text inversion and edit-friendly DDPM inversion (from the
    baselines ``edits``), on both axes; and what ``gamma="auto"`` picked."""
    sentences = []
    for steps, guidance, group in panels(frontier):
        best = best_exact(_bdia(group))
        if best is None:
            sentences.append(f"At {_where(steps, guidance)} no gamma tried inverts within {EXACT:g}.")
            continue
        text = (f"At {_where(steps, guidance)} the best exact BDIA edit is at γ = {best['gamma']:.3g} (round trip "
                f"{best['reconstruction error']:.0e}): read as the target {best['edit success']:.0%} of the time at "
                f"a distance of {best['feature distance']:.1f} from its source")
        ddim = _row(edits, "ddim", steps, guidance)
        if ddim is None:
            sentences.append(text + ".")
            continue
        others = [f"{short_name(label)}'s {row['edit success']:.0%} at {row['feature distance']:.1f}"
                  for label in ("ddim", "null-text", "ddpm-inversion") for row in [_row(edits, label, steps, guidance)]
                  if row is not None]
        text += f", against {join_names(others)}"
        wins = beats(best, ddim)
        text += (": it beats DDIM inversion on both axes." if wins else
                 ": it does not beat DDIM inversion on both axes.")
        edict, null = best_exact(_edict(group)), _row(edits, "null-text", steps, guidance)
        if edict is not None:
            text += (f" EDICT's best exact edit is at p = {edict['p']:.3g}: {edict['edit success']:.0%} at "
                     f"{edict['feature distance']:.1f}")
            if null is not None:
                text += (", as often read as the target as null-text inversion's edits or more, and closer to the "
                         "source." if beats(edict, null) else ", short of null-text inversion on one axis at least.")
            else:
                text += "."
        sentences.append(text)
    auto = frontier[frontier["method"].str.startswith("bdia (γ=auto")]
    for steps, group in auto.groupby("steps", sort=True) if "steps" in auto else [(None, auto)]:
        if group.empty:
            continue
        steps = None if steps is None else int(steps)
        chosen = group.groupby("method")["gamma"].first()
        picked = chosen.get("bdia (γ=auto)", math.nan), chosen.get(AUTO_FLOAT64, math.nan)
        where = "" if steps is None else f" at {steps} steps"
        sentences.append(f"With gamma='auto'{where} the rule picks γ = {picked[0]:.3g} for the float32 network and "
                         f"{picked[1]:.3g} for a float64 copy of it; their worst round trips are "
                         f"{group['reconstruction error'].max():.0e}.")
    return " ".join(sentences)


def pareto_labels(points) -> list[str]:
    """The labels of ``points`` (rows with ``edit success`` and ``feature distance``) that no other point beats on
    both axes: none is read as the target at least as often and is at least as close, and better in one."""
    keep = []
    points = points.dropna(subset=["edit success", "feature distance"])  # a run that overflowed has no edit
    for label, row in points.set_index("method").iterrows():
        beaten = ((points["edit success"] >= row["edit success"]) & (points["feature distance"] <= row["feature distance"])
                  & ((points["edit success"] > row["edit success"])
                     | (points["feature distance"] < row["feature distance"])))
        if not beaten.any():
            keep.append(label)
    return keep


def _trip(error: float) -> str:
    return "exact" if error <= EXACT else f"round trip {error:.0e}"


def front_verdict(frontier, edits, baselines=BASELINES) -> str:
    """Per panel: which recipes are on the front (every BDIA point and baseline that no other beats on both axes),
    each with its round trip; a clause that starts lower case ("at guidance 3 and 20 steps, ..."), for a page to
    introduce."""
    import pandas as pd

    parts = []
    for steps, guidance, group in panels(frontier):
        base = edits[(edits["guidance"] == guidance) & edits["method"].isin(baselines)]
        if steps is not None and "steps" in base:
            base = base[base["steps"] == steps]
        points = pd.concat([group, base], ignore_index=True)
        on = points.set_index("method").loc[pareto_labels(points)].sort_values("edit success", ascending=False)
        parts.append(f"at {_where(steps, guidance)}, " + join_names(_by_family(on)))
    return "; ".join(parts) + "." if parts else ""


def _by_family(on) -> list[str]:
    """Points of the front as a sentence names them: a curve's points together (``BDIA at γ = 0.5 and 0.4``), each
    with its round trip, then every other recipe."""
    phrases = []
    for prefix, key, name in (("bdia (γ=", "gamma", "BDIA at γ = "), ("edict (p=", "p", "EDICT at p = ")):
        rows = on[on.index.str.startswith(prefix) & ~on.index.str.contains("auto")]
        if len(rows):
            errors = rows["reconstruction error"]
            trips = "exact" if (errors <= EXACT).all() else join_names(_trip(e) for e in errors)
            phrases.append(name + join_names(f"{v:g}" for v in rows[key]) + f" ({trips})")
            on = on.drop(rows.index)
    return phrases + [f"{short_name(label)} ({_trip(row['reconstruction error'])})" for label, row in on.iterrows()]


def recipe_costs(frontier, edits, committed_rows=None) -> str:
    """For the last panel (the most steps at the largest guidance): what its best exact BDIA edit, null-text inversion
    and edit-friendly DDPM inversion cost: network calls of an inversion and an edit, backward passes, the latents
    an inversion keeps (a registry fact), and the time of a round trip relative to DDIM inversion's in the committed
    ``edit`` benchmark (the guided digits model at that step count)."""
    from ...methods import REGISTRY

    steps, guidance, group = panels(frontier)[-1]
    best, ddim = best_exact(_bdia(group)), _row(edits, "ddim", steps, guidance)
    if best is None or ddim is None:
        return ""
    inverted = int(ddim["invert calls"])  # DDIM inversion calls the network once per inverted step
    timed = {r["label"]: r["time_ratio_to_ddim"] for r in committed_rows or ()
             if r["model"] == "digits-cfg" and (steps is None or r["steps"] == steps)}
    bdia_times = [ratio for label, ratio in timed.items() if label.startswith("bdia (") and "lattice" not in label]

    def cost(label, row, ratio):
        method = label.split(" ")[0]
        text = (f"{short_name(label)} {int(row['invert calls'] + row['regenerate calls'])} network calls"
                + (f" ({int(row['backward passes'])} backward passes besides)" if row["backward passes"] else ""))
        stored = REGISTRY[method].stored_latents(inverted)
        text += f" and {stored} stored latent{'' if stored == 1 else 's'}"
        if label == AUTO_FLOAT64:
            return text + ", its time not in the benchmark (which runs the float32 network)"
        return text + (f", {ratio:.2f} times DDIM inversion's time" if ratio == ratio else "")

    parts = [cost(best["method"], best, (sum(bdia_times) / len(bdia_times)) if bdia_times else math.nan)]
    edict = best_exact(_edict(group))
    if edict is not None:
        parts.append(cost(edict["method"], edict, timed.get("edict", math.nan)))
    for label in ("null-text", "ddpm-inversion"):
        row = _row(edits, label, steps, guidance)
        if row is not None:
            parts.append(cost(label, row, timed.get(label, math.nan)))
    return (f"At {_where(steps, guidance)} an inversion and an edit cost " + join_names(parts)
            + " (times: a round trip in the committed benchmark; BDIA's, the mean over the γ it times).")


def best_exact_gamma(frontier, guidance: float, steps: int | None = None) -> float:
    """The gamma of the best exact BDIA edit at ``guidance`` (and ``steps``, where given): read as the target most
    often, then the closest to its source; NaN where none is exact."""
    match = frontier["guidance"] == guidance
    if steps is not None:
        match &= frontier["steps"] == steps
    best = best_exact(_bdia(frontier[match]))
    return math.nan if best is None else float(best["gamma"])


def _split_control(label: str) -> tuple[str, str | None]:
    method, _, control = label.partition(" + ")
    return method, control or None


def control_verdict(controlled, edits, frontier) -> str:
    """What a control did to each method's edits (``controlled``: :func:`bdia.apps.book.editing.digit_edits` rows with
    a control, labelled ``"<method> + <control>"``), against the same method without it (from ``edits`` or
    ``frontier``); and whether the best exact controlled recipe beats DDIM inversion's plain edit on both axes."""
    import pandas as pd

    plain = pd.concat([edits, frontier], ignore_index=True)
    sentences = []
    for steps, guidance, group in panels(controlled):
        changes, closer, lower, only = [], 0, 0, []
        control = None
        for _, row in group.iterrows():
            method, control = _split_control(row["method"])
            before = _row(plain, method, steps, guidance)
            if before is None:  # a method with no edit of its own (Direct Inversion)
                only.append(f"{short_name(method)}, which edits only with it, is read as the target "
                            f"{row['edit success']:.0%} of the time at {row['feature distance']:.1f}")
                continue
            closer += row["feature distance"] < before["feature distance"]
            lower += row["edit success"] < before["edit success"]
            changes.append(f"{short_name(method)} {before['edit success']:.0%} at {before['feature distance']:.1f} "
                           f"→ {row['edit success']:.0%} at {row['feature distance']:.1f}")
        if not changes:
            continue
        every = closer == len(changes)
        text = (f"At {_where(steps, guidance)}, {control} (twice the plain edit's network passes, the two branches "
                f"in one batch) brings {'every' if every else f'{closer} of {len(changes)}'} edit"
                f"{'' if every else 's'} closer to {'its' if every else 'their'} source, and "
                f"{'none' if not lower else f'{lower} of {len(changes)}'} {'is' if lower == 1 else 'are'} read as the "
                f"target less often (read as the target, and distance to the source, without and with it: "
                f"{join_names(changes)}).")
        if only:
            text += f" {cap(join_names(only))}."
        best, ddim = best_exact(group), _row(plain, "ddim", steps, guidance)
        if best is not None and ddim is not None:
            method, _ = _split_control(best["method"])
            text += (f" The best exact edit with it, {short_name(method)}'s, "
                     f"{'beats' if beats(best, ddim) else 'does not beat'} DDIM inversion's plain edit on both axes.")
        sentences.append(text)
    return " ".join(sentences)


def glance(frontier, edits) -> str:
    """The edit side of chapter 5's finding, for the introduction's results table: in the last panel (the most steps
    at the largest guidance), the best exact BDIA edit against DDIM inversion's."""
    steps, guidance, group = panels(frontier)[-1]
    best, ddim = best_exact(_bdia(group)), _row(edits, "ddim", steps, guidance)
    if best is None or ddim is None:
        return f"Editing at {_where(steps, guidance)}: no exact BDIA edit to compare."
    side = "closer to" if best["feature distance"] < ddim["feature distance"] else "no closer to"
    network = ", float64 network" if best["method"] == AUTO_FLOAT64 else ""
    return (f"Editing at {_where(steps, guidance)}, the best exact BDIA (γ = {best['gamma']:.3g}{network}) reads as the "
            f"target {best['edit success']:.0%} of the time to DDIM inversion's {ddim['edit success']:.0%} and is "
            f"{side} its source.")


def plot_frontier(frontier, edits, profile: str, stamp: str, controlled=None, baselines=BASELINES):
    """Edit success against distance to the source, one panel per guidance (and step count, where the table has
    one): BDIA over gamma and EDICT over p (filled where the round trip is exact, hollow where rounding won),
    ``gamma="auto"``, the baselines (``edits``) as squares, and the edits with a control (``controlled``) as diamonds in their method's
    colour."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, method_color, stamp_profile

    shown = panels(frontier)
    steps_seen, guidances = {p[0] for p in shown}, {p[1] for p in shown}
    # a full grid of four or more panels reads as a table: step counts down, guidance across
    rows = len(steps_seen) if len(shown) > 3 and len(steps_seen) * len(guidances) == len(shown) else 1
    columns = len(shown) // rows
    fig, axes = plt.subplots(rows, columns, figsize=(PAGE_WIDTH, 0.4 + 3.0 * rows), sharey=True, squeeze=False)
    legend = {}
    for ax, (steps, guidance, group) in zip(axes.flat, shown):
        bdia = _bdia(group)
        for curve, key, name, marker in ((bdia[~bdia["method"].str.startswith("bdia (γ=auto")], "gamma", "bdia", "o"),
                                         (_edict(group), "p", "edict", "^")):
            if curve.empty:
                continue
            curve = curve.sort_values(key)
            colour = method_color(name)
            ax.plot(curve["feature distance"], curve["edit success"], "-", color=colour, lw=1)
            for _, row in curve.iterrows():
                exact = row["reconstruction error"] <= EXACT
                ax.plot(row["feature distance"], row["edit success"], marker, color=colour,
                        mfc=colour if exact else "white")
                ax.annotate(f"{row[key]:g}", (row["feature distance"], row["edit success"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points", color=colour)
            legend["BDIA over γ" if key == "gamma" else "EDICT over p"], = ax.plot([], [], marker + "-",
                                                                                 color=colour, lw=1)
        for label, marker in (("bdia (γ=auto)", "*"), (AUTO_FLOAT64, "P")):
            row = _row(group, label, steps, guidance)
            if row is not None:
                name = f"γ=auto ({'float64' if label == AUTO_FLOAT64 else 'float32'} network)"
                legend[name], = ax.plot(row["feature distance"], row["edit success"], marker, color="black", ms=9)
        for label in baselines:
            row = _row(edits, label, steps, guidance)
            if row is not None:
                legend[short_name(label)], = ax.plot(row["feature distance"], row["edit success"], "s",
                                                     color=method_color(label))
        for _, row in (controlled.iterrows() if controlled is not None else ()):
            if _row(controlled, row["method"], steps, guidance) is None:
                continue
            method, control = _split_control(row["method"])
            colour = method_color(method)
            legend[f"{short_name(method)} + {control}"], = ax.plot(
                row["feature distance"], row["edit success"], "D", color=colour, ms=5,
                mfc=colour if row["reconstruction error"] <= EXACT else "white")
        ax.set_title(_where(steps, guidance).replace(" and ", ", "), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("distance to the source")
    for ax in axes[:, 0]:
        ax.set_ylabel("read as the target")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    stamp_profile(fig, profile, stamp)
    return fig
