"""How chapter 5's sentences name its methods: the labels of the editing benchmark (its methods, the named
experiment of the published first step, the fresh samples), their names in prose, and the grouping that keeps a
sentence to a few names ("every exact method", "every method but EDICT", "BDIA at γ = 0.9, 0.96 and 1")."""

from __future__ import annotations

from ...methods import MethodSpec
from . import join_names

__all__ = ["EDIT_SPECS", "PUBLISHED_FIRST_STEP", "FRESH", "short_name", "is_exact", "family", "families",
           "name_methods", "plural", "cap"]

#: the methods of the editing benchmark: DDIM inversion, what editors use instead, and the exact methods
EDIT_SPECS = ("ddim", "null-text", "negative-prompt", "ddpm-inversion", "edict", "obelm", "bdia:gamma=0.9",
              "bdia:gamma=0.96", "bdia:gamma=1.0", "bdia:gamma=1.0,lattice=true")
#: the label of the named experiment: BDIA (gamma 0.96) seeded by the published baselines' first inversion step
PUBLISHED_FIRST_STEP = "bdia (γ=0.96), published first step"
#: fresh samples of the target (no inversion): how far an edit moves when nothing is kept
FRESH = "fresh samples"
_NAMES = {"ddim": "DDIM inversion", "null-text": "null-text inversion", "negative-prompt": "negative-prompt inversion",
          "ddpm-inversion": "edit-friendly DDPM inversion", "direct-inversion": "Direct Inversion", "edict": "EDICT",
          "obelm": "O-BELM", "rf-inversion": "RF-Inversion", "midpoint": "the midpoint rule (RF-Solver)",
          "fireflow": "FireFlow", "flowedit": "FlowEdit", FRESH: "fresh samples"}


def short_name(label: str) -> str:
    """How a sentence names a method label: ``"bdia (γ=0.96)"`` -> ``"BDIA (γ = 0.96)"``."""
    if label in _NAMES:
        return _NAMES[label]
    if label == PUBLISHED_FIRST_STEP:
        return "BDIA (γ = 0.96) seeded as the published baselines do"
    if "lattice" in label:
        return "BDIA on the lattice"
    return label.replace("bdia (γ=", "BDIA (γ = ").replace("edict (p=", "EDICT (p = ")


def is_exact(label: str) -> bool:
    """Whether a label of this chapter names an exact method (the named experiment and the fresh samples are not
    methods)."""
    exact = {MethodSpec.parse(text).label: MethodSpec.parse(text).record.exact for text in EDIT_SPECS}
    return exact.get(label, label.startswith(("bdia (", "edict", "obelm")) and label != PUBLISHED_FIRST_STEP)


def family(label: str) -> str:
    """The method a label belongs to, for sentences that name methods rather than settings."""
    if label.startswith("bdia (") and label != PUBLISHED_FIRST_STEP:
        return "BDIA"
    return short_name(label)


def name_methods(labels, universe=None, empty: str = "no method") -> str:
    """``labels`` named for a sentence, in as few names as say it: "every method" (or "every exact method") where
    they cover the table's labels ``universe``, "every method but ..." where they miss one or two, BDIA's gammas
    (without the lattice) as one group."""
    labels = list(dict.fromkeys(labels))
    if universe is not None:
        universe = [u for u in dict.fromkeys(universe) if u != FRESH]
        everything = "every exact method" if all(is_exact(u) for u in universe) else "every method"
        missing = [u for u in universe if u not in labels]
        if len(universe) > 2 and not missing:
            return everything
        if len(universe) > 4 and len(missing) <= 2 and set(labels) <= set(universe):
            return f"{everything} but {name_methods(missing)}"
        exact = [u for u in universe if is_exact(u)]
        if len(exact) > 1 and set(exact) <= set(labels):
            rest = [label for label in labels if label not in exact]
            return join_names(["every exact method"] + [short_name(label) for label in rest])
    gammas = [label.split("γ=")[1].rstrip(")") for label in labels
              if family(label) == "BDIA" and "lattice" not in label]
    if len(gammas) > 1:
        named = [f"BDIA at γ = {join_names(gammas)}"]
        named += [short_name(label) for label in labels if not (family(label) == "BDIA" and "lattice" not in label)]
        return join_names(named, empty=empty)
    return join_names([short_name(label) for label in labels], empty=empty)


def plural(names: str, count: int) -> bool:
    """Whether a sentence's subject ``names`` (``count`` labels) takes a plural verb."""
    return count > 1 and not names.startswith("every")


def cap(text: str) -> str:
    """``text`` with its first letter upper case (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


def families(labels) -> str:
    """The methods ``labels`` belong to, BDIA first."""
    names = list(dict.fromkeys(family(label) for label in labels))
    return join_names(sorted(names, key=lambda name: name != "BDIA"))
