"""Chapter 7's editing on a trained flow: the flow editors a frontier sets beside BDIA's curve, the verdict that
holds the best exact BDIA edit against Euler inversion, RF-Inversion and FlowEdit, and what each costs in the
committed ``flow-edit`` benchmark."""

from __future__ import annotations

from . import join_names
from .wording import short_name

__all__ = ["EDIT_BASELINES", "EDIT_RIVALS", "flow_name", "flow_edit_verdict", "flow_edit_costs"]

#: the methods a flow's editing frontier sets beside BDIA's curve: Euler inversion (DDIM's step on a flow),
#: RF-Inversion, FlowEdit, RF-Solver's midpoint rule, FireFlow, EDICT and O-BELM
EDIT_BASELINES = ("ddim", "rf-inversion", "flowedit", "midpoint", "fireflow", "edict", "obelm")
#: the editors a flow's exact edit is held against in the verdict: Euler inversion and the two the field edits with
EDIT_RIVALS = ("ddim", "rf-inversion", "flowedit")


def flow_name(label: str) -> str:
    """How a sentence names a flow method: DDIM's step on a flow is Euler inversion."""
    return "Euler inversion" if label == "ddim" else short_name(label)


def _grouped(on) -> list[str]:
    """The points of a front as a sentence names them: a curve's points together (``BDIA at γ = 0.5 and 0.4``)."""
    from .frontier import AUTO_FLOAT64

    auto = {"bdia (γ=auto)": "auto", AUTO_FLOAT64: "auto with a float64 network"}
    names, rest = [], list(on.index)
    for prefix, key, name in (("bdia (γ=", "gamma", "BDIA at γ = "), ("edict (p=", "p", "EDICT at p = ")):
        curve = [label for label in rest if label.startswith(prefix)]
        if curve:
            names.append(name + join_names(auto.get(label, f"{on.loc[label, key]:g}") for label in curve))
            rest = [label for label in rest if label not in curve]
    return names + [flow_name(label) for label in rest]


def flow_edit_verdict(front, baselines) -> str:
    """Per panel of a flow's editing frontier (:func:`bdia.apps.book.frontier.frontier_runs` with
    :data:`EDIT_BASELINES`): the exact BDIA edit read as the target most often, against the edits of
    :data:`EDIT_RIVALS` (Euler inversion, RF-Inversion, FlowEdit) on both axes, and the recipes no other beats on both
    axes."""
    import pandas as pd

    from . import frontier

    sentences = []
    for steps, guidance, group in frontier.panels(front):
        where = f"At guidance {guidance:g} and {steps} steps"
        base = baselines[(baselines["guidance"] == guidance) & (baselines["steps"] == steps)]
        rows = {label: base[base["method"] == label].iloc[0] for label in EDIT_RIVALS
                if (base["method"] == label).any()}
        best = frontier.best_exact(group[group["method"].str.startswith("bdia")])
        if best is None:
            text = f"{where} no γ tried inverts within {frontier.EXACT:g}"
        else:
            network = (", chosen by gamma='auto' for a float64 network" if best["method"] == frontier.AUTO_FLOAT64
                       else "")
            text = (f"{where} the best exact BDIA edit is at γ = {best['gamma']:.3g} (round trip "
                    f"{best['reconstruction error']:.0e}{network}): read as the target {best['edit success']:.0%} of "
                    "the time at "
                    f"a distance of {best['feature distance']:.1f} from its source")
            if rows:
                text += ", against " + join_names(f"{flow_name(label)}'s {row['edit success']:.0%} at "
                                                  f"{row['feature distance']:.1f}" for label, row in rows.items())
                won = [flow_name(label) for label, row in rows.items() if frontier.beats(best, row)]
                lost = [flow_name(label) for label, row in rows.items() if not frontier.beats(best, row)]
                if won:
                    text += f"; it beats {join_names(won)} on both axes"
                    text += f" but not {join_names(lost)}" if lost else ""
                else:
                    text += ("; it beats neither " + " nor ".join(lost) if len(lost) == 2 else
                             f"; it beats none of {join_names(lost)}" if len(lost) > 2 else
                             f"; it does not beat {join_names(lost)}") + " on both axes"
        points = pd.concat([group, base[base["method"].isin(EDIT_BASELINES)]], ignore_index=True)
        on = points.set_index("method").loc[frontier.pareto_labels(points)].sort_values("edit success",
                                                                                          ascending=False)
        exact = [label for label, row in on.iterrows() if row["reconstruction error"] <= frontier.EXACT]
        text += (f". On the front: {join_names(_grouped(on))}"
                 + (" (all exact)." if len(exact) == len(on) else " (none exact)." if not exact else
                    f" ({len(exact)} of its {len(on)} points exact)."))
        sentences.append(text)
    return " ".join(sentences)


def flow_edit_costs(record, model: str = "digits-flow") -> str:
    """What a round trip (an inversion and a regeneration) costs BDIA (the range over the γ the benchmark times),
    RF-Inversion and FlowEdit in the committed ``flow-edit`` benchmark ``record`` on ``model`` at its largest step
    count: network calls and the time relative to Euler inversion's, measured in the same run (medians over its
    repeats). FlowEdit's round trip is its edit with the source's condition as the target's: all its calls are in
    the edit. An empty string without a record."""
    rows = [r for r in (record or {}).get("rows", ()) if r["model"] == model]
    if not rows:
        return ""
    steps = max(r["steps"] for r in rows)
    at = {r["label"]: r for r in rows if r["steps"] == steps}
    bdia = [r for label, r in at.items() if label.startswith("bdia (")]
    parts = []
    if bdia:
        low, high = (f(r["time_ratio_to_ddim"] for r in bdia) for f in (min, max))
        span = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
        parts.append(f"BDIA {span} times ({bdia[0]['calls']} calls, at each γ it times)")
    parts += [f"{short_name(label)} {at[label]['time_ratio_to_ddim']:.2f} times ({at[label]['calls']} calls)"
              for label in ("rf-inversion", "flowedit") if label in at]
    m = record["machine"]
    return (f"In the committed `flow-edit` benchmark ({m.get('gpu', m['processor'])}, {m['threads']} threads, "
            f"{record['created']}), a round trip of {steps} steps on the {model} model costs, relative to Euler "
            f"inversion's time ({at['ddim']['calls']} calls): " + join_names(parts)
            + ". FlowEdit's calls are all in its edit, two per step: it does not invert.")
