"""Helpers for the book's chapters: the sentences and keys they compute from their own numbers.

The chapters import these from the installed package (Colab opens one chapter alone), so every helper here
is tested like the library.
"""

from __future__ import annotations

import re

__all__ = ["join_names", "name_labels", "label_key", "quiet_libraries"]


def join_names(items, empty: str = "none") -> str:
    """``"a, b and c"`` (for sentences the book computes from its numbers); ``empty`` for no items."""
    items = [str(i) for i in items]
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def name_labels(labels, empty: str = "none") -> str:
    """Method labels for a sentence, the gammas of one method named together: ``["bdia-edm (γ=0.1)", "bdia-edm (γ=0.5)",
    "heun"]`` -> ``"bdia-edm at γ = 0.1 and 0.5 and heun"``, so that a sentence lists methods, not settings."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        match = re.fullmatch(r"(.+) \(γ=([0-9.]+)\)", str(label))
        method, gamma = (match.group(1), match.group(2)) if match else (str(label), None)
        groups.setdefault(method, []).append(gamma)
    named = [method if gammas == [None] else
             (f"{method} (γ={gammas[0]})" if len(gammas) == 1 else f"{method} at γ = {join_names(gammas)}")
             for method, gammas in groups.items()]
    return join_names(named, empty=empty)


def label_key(label: str) -> str:
    """A name-safe key for a :attr:`bdia.MethodSpec.label`: ``"bdia (γ=0.96)"`` -> ``"bdia_096"``,
    ``"bdia (γ=1, lattice=True)"`` -> ``"bdia_1_lattice"`` (for glue keys)."""
    key = label.replace(" (γ=", "_").replace(", lattice=True", "_lattice").replace(")", "").replace(".", "")
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def quiet_libraries() -> None:
    """Keep third-party notices out of a chapter's output: transformers' and diffusers' loggers at errors only (their
    notices about optional image backends and truncated prompts say nothing about the experiment) and their progress
    bars off. The book's build sets the same through the environment; a chapter opened alone calls this."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:  # the core chapters run without them
        return
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
