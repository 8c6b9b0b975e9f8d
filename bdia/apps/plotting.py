"""Matplotlib helpers for the book: one colour per method, one marker and line style per gamma, figures drawn
at the width they are shown, and a stamp naming the profile (and the weights) on every figure."""

from __future__ import annotations

import re

__all__ = ["METHOD_COLORS", "method_color", "method_style", "stamp_profile", "use_book_style", "PAGE_WIDTH"]

#: the width (inches) at which the book shows a figure: drawn at this width, its text is shown at its size
PAGE_WIDTH = 6.2

METHOD_COLORS = {
    "ddim": "#8c564b",
    "edict": "#1f77b4",
    "bdia": "#d62728",
    "obelm": "#2ca02c",
    "heun": "#9467bd",
    "bdia-edm": "#ff7f0e",
    "midpoint": "#e377c2",
    "fireflow": "#bcbd22",
    "null-text": "#17becf",
    "negative-prompt": "#7f7f7f",
    "ddpm-inversion": "#aec7e8",
    "direct-inversion": "#c49c94",
    "rf-inversion": "#98df8a",
    "flowedit": "#393b79",
    "reference": "#000000",
}
# markers and line styles by gamma, so that two gammas of one method never share a look
_GAMMA_STYLES = [(1.0, "o", "-"), (0.96, "s", "--"), (0.9, "^", "-."), (0.7, "v", (0, (5, 1))), (0.5, "D", ":"),
                 (0.3, "P", (0, (3, 1, 1, 1))), (0.1, "X", (0, (1, 2))), (0.0, "*", "-")]


def method_color(method: str) -> str:
    """The book's colour for a method name (or a label starting with it)."""
    name = str(method).split(" ")[0].split(":")[0]
    return METHOD_COLORS.get(name, "#17becf")


def method_style(label: str) -> dict:
    """``color``, ``marker`` and ``ls`` for a method label such as ``"bdia (γ=0.5)"`` or ``"bdia:gamma=0.5"``."""
    if "lattice" in str(label):  # a lattice run of BDIA: never drawn like the plain one
        return {"color": method_color(label), "marker": "h", "ls": (0, (1, 1))}
    match = re.search(r"(?:γ=|gamma=)([0-9.]+)", str(label))
    if not match:
        return {"color": method_color(label), "marker": "o", "ls": "-"}
    gamma = float(match.group(1))
    _, marker, ls = min(_GAMMA_STYLES, key=lambda style: abs(style[0] - gamma))
    return {"color": method_color(label), "marker": marker, "ls": ls}


def stamp_profile(fig, profile: str, extra: str = "") -> None:
    """Write ``profile: ci`` (or ``paper``) into the figure's corner, so no figure is mistaken for the other."""
    text = f"profile: {profile}" + (f" · {extra}" if extra else "")
    # as the figure's suptitle, at the right: constrained layout reserves room for it above every axes title
    fig.suptitle(text, x=0.995, ha="right", fontsize=7.5, color="#333333")


def use_book_style() -> None:
    """Defaults for figures drawn at :data:`PAGE_WIDTH` and shown at that width (text at its nominal size)."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "figure.figsize": (PAGE_WIDTH, 3.2),
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.fontsize": 7.5,
        "lines.markersize": 4,
        "figure.constrained_layout.use": True,
    })
