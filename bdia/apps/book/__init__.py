"""Helpers for the book's chapters: the sentences and keys they compute from their own numbers.

The chapters import these from the installed package (Colab opens one chapter alone), so every helper here
is tested like the library.
"""

from __future__ import annotations

import re

__all__ = ["join_names", "label_key"]


def join_names(items, empty: str = "none") -> str:
    """``"a, b and c"`` (for sentences the book computes from its numbers); ``empty`` for no items."""
    items = [str(i) for i in items]
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def label_key(label: str) -> str:
    """A name-safe key for a :attr:`bdia.MethodSpec.label`: ``"bdia (γ=0.96)"`` -> ``"bdia_096"``,
    ``"bdia (γ=1, lattice=True)"`` -> ``"bdia_1_lattice"`` (for glue keys)."""
    key = label.replace(" (γ=", "_").replace(", lattice=True", "_lattice").replace(")", "").replace(".", "")
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)
