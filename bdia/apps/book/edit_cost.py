"""Chapter 5's cost of exact editing: per method, the round-trip error on real digits beside the network passes
it took (this run) and its time relative to DDIM inversion (the committed ``edit`` benchmark), the sentences and the
figure the chapter shows, and the paper's cost claims beside what was measured. The edits themselves come from
:func:`bdia.apps.book.editing.digit_edits`.
"""

from __future__ import annotations

from . import join_names
from .wording import FRESH, PUBLISHED_FIRST_STEP, cap, families, family, is_exact, name_methods, plural, short_name

__all__ = ["cost_table", "cost_verdict", "paper_cost_claims", "plot_cost", "glance"]


def cost_table(digits, committed_rows=None, guidance: float = 3.0):
    """Per method at ``guidance``: the digits' round-trip error, the network passes of a round trip (forward calls
    and backward passes), and, where a committed benchmark of the ``edit`` suite has the method, its time ratio to
    DDIM inversion (``digits-cfg`` model, the benchmark's largest step count)."""
    import pandas as pd

    at = digits[(digits["guidance"] == guidance) & (digits["method"] != FRESH)].set_index("method")
    table = pd.DataFrame({"reconstruction error": at["reconstruction error"],
                          "network passes": at["invert calls"] + at["backward passes"] + at["regenerate calls"],
                          "of which backward": at["backward passes"]})
    table["time / DDIM (committed)"] = float("nan")
    if committed_rows:
        rows = [r for r in committed_rows if r["model"] == "digits-cfg"]
        if rows:
            n = max(r["steps"] for r in rows)
            ratios = {r["label"]: r["time_ratio_to_ddim"] for r in rows if r["steps"] == n}
            table["time / DDIM (committed)"] = [ratios.get(label, float("nan")) for label in table.index]
    return table


def cost_verdict(costs, bound: float = 1e-6) -> str:
    """Which exact methods reconstruct to rounding error and with how many network passes and how much time, and
    what the approximate methods pay for how close they come."""
    methods = costs.drop(index=[PUBLISHED_FIRST_STEP], errors="ignore")
    exact = methods[[is_exact(label) for label in methods.index]]
    approximate = methods.drop(exact.index)
    held = exact[exact["reconstruction error"] < bound]
    sentences = []
    if len(held):
        worst = held["reconstruction error"].max()
        zero = held.index[held["reconstruction error"] == 0]
        names = name_methods(held.index, exact.index)
        sentences.append(f"{cap(names)} reconstruct{'' if plural(names, len(held)) else 's'} the digits to rounding "
                         f"error (worst {worst:.0e}" + (", and exactly 0 on the lattice)" if len(zero) else ")"))
        groups = [(int(passes), families(group.index)) for passes, group in held.groupby("network passes")]
        first, *rest = groups
        sentences.append(f"{first[1]} need{'' if ' and ' in first[1] else 's'} {first[0]} network passes per round "
                         "trip" + "".join(f", {name} {passes}" for passes, name in rest))
        timed = held["time / DDIM (committed)"].dropna()
        if len(timed):
            spans = timed.groupby([family(label) for label in timed.index]).agg(["min", "max"]).sort_values("min")
            sentences[-1] += ("; in the committed benchmark a round trip takes " + join_names(
                f"{family} {low:.2f}" + (f" to {high:.2f}" if high - low >= 0.005 else "")
                for family, (low, high) in spans.iterrows()) + " times DDIM inversion's time")
    missed = exact.drop(held.index)
    if len(missed):
        sentences.append(f"{cap(name_methods(missed.index))} miss{'' if len(missed) > 1 else 'es'} by "
                         f"{missed['reconstruction error'].min():.1e} to {missed['reconstruction error'].max():.1e}")
    parts = []
    for label, row in approximate.iterrows():
        part = f"{short_name(label)} misses by {row['reconstruction error']:.1e} with {int(row['network passes'])} passes"
        if row["of which backward"]:
            part += f", {int(row['of which backward'])} of them backward"
        ratio = row["time / DDIM (committed)"]
        if ratio == ratio and label != "ddim":
            part += f", taking {ratio:.1f} times DDIM inversion's time"
        parts.append(part)
    if parts:
        sentences.append("; ".join(parts))
    return ". ".join(s[0].upper() + s[1:] for s in sentences) + "."


def paper_cost_claims(costs, committed=None):
    """The paper's statements about cost beside what this chapter measured (``costs`` from :func:`cost_table`) and
    what the committed ``edit`` benchmark timed (``committed``: its results, or None)."""
    import pandas as pd

    from ...methods import get_method

    def passes(label):
        return int(costs.loc[label, "network passes"])

    def timed(label):
        ratio = costs.loc[label, "time / DDIM (committed)"]
        return f", {ratio:.2f} times DDIM inversion's time" if ratio == ratio else ""

    where = ("committed run: " + committed["machine"].get("gpu", committed["machine"]["processor"])
             if committed else "no committed edit benchmark: calls only")
    bdia_calls = get_method("bdia").network_calls(50, "invert") + get_method("bdia").network_calls(50, "reconstruct")
    rows = [
        ("BDIA inverts exactly with negligible computational overhead",
         f"BDIA (γ = 1): {passes('bdia (γ=1)')} network passes per round trip, DDIM inversion "
         f"{passes('ddim')}{timed('bdia (γ=1)')}"),
        ("EDICT doubles the network evaluations; BDIA needs about half of EDICT's",
         f"EDICT: {passes('edict')} passes{timed('edict')}; BDIA {passes('bdia (γ=1)') / passes('edict'):.2f} of "
         "EDICT's passes"),
        ("null-text inversion introduces considerable computational overhead",
         f"null-text inversion: {passes('null-text')} passes, {int(costs.loc['null-text', 'of which backward'])} of "
         f"them backward{timed('null-text')}"),
        ("Fig. 1: a 50-step round trip costs BDIA 97 network evaluations and DDIM 100",
         f"BDIA {bdia_calls}, DDIM {2 * 50} (chapter 6 explains the count)"),
    ]
    return pd.DataFrame(rows, columns=["the paper says", f"measured here (digits, guidance 3; {where})"])


def plot_cost(costs, profile: str):
    """Round-trip error against network passes (this run) and against time relative to DDIM (committed run)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    timed = costs["time / DDIM (committed)"].notna().any()
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(PAGE_WIDTH, 3.8), sharey=True, squeeze=False)
    floor = 1e-17
    columns = [("network passes", "network passes per round trip")]
    if timed:
        columns.append(("time / DDIM (committed)", "time / DDIM inversion (committed run)"))
    for ax, (column, xlabel) in zip(axes[0], columns):
        for label, row in costs.iterrows():
            ax.scatter(row[column], max(row["reconstruction error"], floor), s=28, label=short_name(label),
                       **{k: v for k, v in method_style(label).items() if k in ("color", "marker")})
        ax.set(xscale="log", yscale="log", xlabel=xlabel)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # the minor ticks' labels run into each other
    axes[0, 0].set_ylabel("round-trip error (0 at 1e-17)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=7)
    stamp_profile(fig, profile, "digits model trained by bdia, guidance 3")
    return fig


def glance(costs, bound: float = 1e-6) -> str:
    """Chapter 5's finding in one sentence, for the results table of the introduction."""
    exact = costs[[is_exact(label) for label in costs.index]]
    held = bool((exact["reconstruction error"] < bound).all())
    passes = costs["network passes"]
    return (f"{'Yes' if held else 'Not quite'}: every exact method reconstructs real digits under guidance 3 to rounding "
            f"error, BDIA with {int(passes['bdia (γ=1)'])} network passes per round trip against EDICT's "
            f"{int(passes['edict'])} and null-text inversion's {int(passes['null-text'])}, which still misses by "
            f"{costs.loc['null-text', 'reconstruction error']:.0e}.")
