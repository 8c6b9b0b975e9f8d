"""Matplotlib helpers for the book: one colour per method, and a stamp naming the profile on every figure."""

from __future__ import annotations

__all__ = ["METHOD_COLORS", "method_color", "stamp_profile", "use_book_style"]

METHOD_COLORS = {
    "ddim": "#7f7f7f",
    "edict": "#1f77b4",
    "bdia": "#d62728",
    "obelm": "#2ca02c",
    "heun": "#9467bd",
    "bdia-edm": "#ff7f0e",
    "reference": "#000000",
}


def method_color(method: str) -> str:
    """The book's colour for a method name (or a label starting with it)."""
    name = str(method).split(" ")[0].split(":")[0]
    return METHOD_COLORS.get(name, "#17becf")


def stamp_profile(fig, profile: str, extra: str = "") -> None:
    """Write ``profile: ci`` (or ``paper``) into the figure's corner, so no figure is mistaken for the other."""
    text = f"profile: {profile}" + (f" · {extra}" if extra else "")
    # above the axes, at the right: never on top of a tick label, kept by bbox_inches="tight"
    fig.text(1.0, 1.0, text, ha="right", va="bottom", fontsize=7, color="#555555", alpha=0.9)


def use_book_style() -> None:
    """Small, readable defaults for figures rendered at book width."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.fontsize": 8,
        "figure.constrained_layout.use": True,
    })
