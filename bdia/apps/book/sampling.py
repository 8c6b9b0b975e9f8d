"""Chapter 4's experiment and sentences: FID of DDIM, BDIA-DDIM, O-BELM, Heun and BDIA-EDM at fixed budgets of network
calls (:func:`bdia.apps.fid.run_fid`, resumable), the noise band from other seeds, the table beside the paper's
Table 1, and the verdict."""

from __future__ import annotations

import numpy as np

from ..fid import FIDConfig, config_record, fingerprinted_dir, run_fid, shard_path

__all__ = ["glance", "PAPER_TABLE_1", "fid_config", "seed_spread", "results_table", "fid_verdict", "as_set", "plot_fid"]

#: the paper's Table 1 (CIFAR10, 10 network calls): DDIM and BDIA-DDIM, gamma not stated
PAPER_TABLE_1 = {"ddim": 14.38, "bdia, paper's Table 1 (γ not stated)": 11.14}


def fid_config(output_dir, **fields) -> FIDConfig:
    """A :class:`~bdia.apps.fid.FIDConfig` whose output folder is keyed by the code, the model and the sizes, so an
    interrupted or repeated run resumes there and a changed one starts afresh."""
    cfg = FIDConfig(out_dir=".", **fields)
    cfg.out_dir = fingerprinted_dir(output_dir, cfg)
    return cfg


def seed_spread(cfg: FIDConfig, output_dir, first: float, noise_seeds) -> list[float]:
    """DDIM's score at the smallest budget from other seeds (``first`` is this run's), each in its own resumable
    folder: the noise band of the comparisons."""
    fids = [float(first)]
    for other in noise_seeds:
        fields = {**config_record(cfg), "methods": ["ddim"], "budgets": [min(cfg.budgets)], "seed": other}
        fids.append(run_fid(fid_config(output_dir, **{k: v for k, v in fields.items() if k != "out_dir"}))[0]["fid"])
    return fids


def results_table(table, steps):
    """The scores per budget, the steps at 10 calls, and the paper's Table 1 on its own rows and column."""
    shown = table.copy()
    shown.columns = [f"{c} calls" for c in shown.columns]
    shown["steps at 10 calls"] = steps[10] if 10 in steps else np.nan
    paper = "paper, CIFAR10, 10 calls"
    shown[paper] = [PAPER_TABLE_1.get(label, np.nan) for label in shown.index]
    for label, value in PAPER_TABLE_1.items():
        if label not in shown.index:
            shown.loc[label] = np.nan
            shown.loc[label, paper] = value
    return shown


def as_set(values) -> str:
    """``{0.3, 0.5}``, or ``no tested value``."""
    return "{" + ", ".join(f"{g:g}" for g in values) + "}" if values else "no tested value"


def fid_verdict(table, noise_sd: float, bdia_gammas, bdia_edm_gammas) -> str:
    """At the smallest budget: for which gammas BDIA-DDIM beats DDIM and BDIA-EDM beats Heun by more than twice the
    seed noise, where O-BELM stands, and how the methods' spread changes with the budget."""
    small, large = min(table.columns), max(table.columns)
    at, margin = table[small], 2 * noise_sd
    better_bdia = [g for g in bdia_gammas if at[f"bdia (γ={g:g})"] < at["ddim"] - margin]
    better_edm = [g for g in bdia_edm_gammas if at[f"bdia-edm (γ={g:g})"] < at["heun"] - margin]
    worse_edm = [g for g in bdia_edm_gammas if at[f"bdia-edm (γ={g:g})"] > at["heun"] + margin]
    obelm = ("better than" if at["obelm"] < at["ddim"] - margin else
             "worse than" if at["obelm"] > at["ddim"] + margin else "within the noise of")
    spread = {b: float(table[b].max() - table[b].min()) for b in (small, large)}
    return (f"At {small} network calls BDIA-DDIM improves on DDIM by more than twice the seed noise for γ ∈ "
            f"{as_set(better_bdia)}"
            + (", which agrees in direction with the paper's Table 1 (which does not say which γ it used)."
               if better_bdia else ", so this run does not reproduce the direction of the paper's Table 1.")
            + f" O-BELM, the exact second-order method, is {obelm} DDIM ({at['obelm']:.2f} against {at['ddim']:.2f})."
            f" BDIA-EDM beats Heun for γ ∈ {as_set(better_edm)}"
            + (f" and is worse for γ ∈ {as_set(worse_edm)}" if worse_edm else "")
            + f". From {small} to {large} calls the spread between the methods' scores goes from {spread[small]:.2f} "
            f"to {spread[large]:.2f}.")


def plot_fid(table, cfg: FIDConfig, results, profile: str, shown_per_method: int = 12):
    """Fréchet distance against the budget, and the first samples of each method at the smallest budget."""
    import matplotlib.pyplot as plt
    import torch
    from safetensors import safe_open

    from ..plotting import PAGE_WIDTH, method_style, stamp_profile

    labels, budgets = list(table.index), list(table.columns)
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.3), width_ratios=[1.15, 1])
    ax = axes[0]
    for label in labels:
        ax.plot(budgets, table.loc[label, budgets], ms=4, label=label, **method_style(label))
    ax.set(yscale="log", xlabel="network calls", ylabel="Fréchet distance", xticks=budgets)
    ax.set_title(f"{'digits' if profile == 'ci' else 'CIFAR10'}: Fréchet distance", fontsize=8)
    ax.legend(fontsize=6.5, ncol=2)
    rows = []
    for spec in cfg.methods:
        with safe_open(str(shard_path(cfg.out_dir, spec, min(budgets), 0)), "pt") as f:
            images = f.get_tensor("images")[:shown_per_method].float()
        images = images[:, 0] if images.shape[1] == 1 else images.mean(1)
        frame = 0.0 if profile == "ci" else 255.0  # white frames
        rows.append(torch.cat(list(torch.nn.functional.pad(images, (1, 1, 1, 1), value=frame)), dim=1))
    ax = axes[1]
    ax.imshow(torch.cat(rows, dim=0), cmap="gray_r" if profile == "ci" else "gray")
    ax.set_yticks([(i + 0.5) * rows[0].shape[0] for i in range(len(rows))], labels, fontsize=6.5)
    ax.set_xticks([])
    ax.grid(False)
    ax.set_title(f"samples at {min(budgets)} calls\n(same noise in each column)", fontsize=8)
    weights = ", ".join(sorted(set(results.weights) | set(results.detector_weights)))
    stamp_profile(fig, profile, ("digits, not CIFAR10" if profile == "ci" else "CIFAR10") + f" · weights: {weights}")
    return fig, weights


def glance(table, noise_sd: float, bdia_gammas, profile: str) -> str:
    """Chapter 4's finding in one sentence, for the results table of the introduction."""
    small = min(table.columns)
    at = table[small]
    better = [g for g in bdia_gammas if at[f"bdia (γ={g:g})"] < at["ddim"] - 2 * noise_sd]
    model = "the digits model" if profile == "ci" else "CIFAR10"
    return (f"On {model} at {small} calls BDIA-DDIM beats DDIM by more than the seed noise for γ ∈ {as_set(better)} "
            f"(DDIM {at['ddim']:.2f}, best BDIA {min(at[f'bdia (γ={g:g})'] for g in bdia_gammas):.2f}); the paper's "
            "CIFAR10 numbers need the paper profile.")
