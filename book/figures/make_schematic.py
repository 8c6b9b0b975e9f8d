"""Draw book/figures/bdia-schematic.svg, the introduction's picture of DDIM vs BDIA (paper Fig. 2).

Run `python book/figures/make_schematic.py` after changing it; the SVG is committed.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).with_name("bdia-schematic.svg")
FORWARD, BACKWARD = "#d62728", "#1f77b4"


def arrow(ax, x0, x1, y, color, label=None):
    ax.annotate("", xy=(x1, y), xytext=(x0, y),
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6, shrinkA=6, shrinkB=6))
    if label:
        ax.text((x0 + x1) / 2, y + 0.12, label, ha="center", va="bottom", fontsize=8, color=color)


def main():
    matplotlib.rcParams["svg.hashsalt"] = "bdia"  # reproducible SVG ids
    fig, axes = plt.subplots(2, 1, figsize=(7.2, 3.4), sharex=True)
    xs = [4, 3, 2, 1, 0]
    names = [r"$t_{i+2}$", r"$t_{i+1}$", r"$t_i$", r"$t_{i-1}$", r"$t_{i-2}$"]
    for ax in axes:
        ax.set_ylim(-0.6, 1.9)
        ax.set_xlim(4.5, -0.5)
        ax.axis("off")
        for x, n in zip(xs, names):
            ax.plot([x], [0], "o", color="black", ms=5)
            ax.text(x, -0.35, n, ha="center", va="top", fontsize=9)
        ax.plot([4.3, -0.3], [0, 0], color="#999999", lw=0.8, zorder=0)
    ax = axes[0]
    ax.set_title("DDIM: every time slot is integrated forward from its start", fontsize=9, loc="left")
    for x0, x1 in zip(xs[:-1], xs[1:]):
        arrow(ax, x0, x1, 0.35, FORWARD)
    ax.text(-0.45, 1.1, r"$z_{i-1} = z_i + \Delta(t_i \to t_{i-1} \mid z_i)$", ha="right", fontsize=9)
    ax = axes[1]
    ax.set_title(r"BDIA: the new slot forward from $z_i$, the previous slot re-estimated backward from $z_i$",
                 fontsize=9, loc="left")
    arrow(ax, 2, 1, 0.35, FORWARD, r"$+\Delta(t_i \to t_{i-1} \mid z_i)$")
    arrow(ax, 2, 3, 0.35, BACKWARD, r"$-\Delta(t_i \to t_{i+1} \mid z_i)$")
    ax.annotate("", xy=(1.05, 0.75), xytext=(2.95, 0.75),
                arrowprops=dict(arrowstyle="-|>", color="black", lw=1.0, connectionstyle="arc3,rad=-0.25"))
    ax.text(2, 1.45, r"$z_{i-1} = z_{i+1} - \Delta(t_i \to t_{i+1} \mid z_i) + \Delta(t_i \to t_{i-1} \mid z_i)$"
            "  (one network call, at $z_i$)", ha="center", fontsize=8.5)
    fig.savefig(OUT, bbox_inches="tight", metadata={"Date": None})
    print(OUT)


if __name__ == "__main__":
    main()
