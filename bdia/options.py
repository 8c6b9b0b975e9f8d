"""Method options: each option's default, its check and a line of documentation (:class:`Option`), as the
registry's records (:mod:`bdia.methods`) list them. A check takes the value and the options resolved before it and
returns the normalised value, or raises a :class:`bdia.UsageError` that says what is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import InvalidTypeError, InvalidValueError
from .exactness import DEFAULT_TOLERANCE
from .lattice import check_lattice_option

__all__ = ["Option", "AUTO", "GAMMA", "TOLERANCE", "LATTICE", "P", "LEAPFROG", "SEED", "CONTROLLER", "ETA", "START",
           "STOP", "INNER_STEPS", "LR", "EARLY_STOP", "EARLY_STOP_GROWTH"]


# ---------------------------------------------------------------------------------------------------
# option checks: each takes the value and the options resolved before it, returns the normalised value


def _check_gamma(value, resolved: dict):
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        gamma = float(value)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"gamma must be a number in [0, 1] or 'auto', got {value!r}") from None
    if not 0.0 <= gamma <= 1.0:  # also rejects nan
        raise InvalidValueError(f"gamma must be in [0, 1] (paper eq. 29) or 'auto', got {gamma}")
    return gamma


def _check_tolerance(value, resolved: dict):
    if value is None:
        return DEFAULT_TOLERANCE if resolved.get("gamma") == AUTO else None
    if resolved.get("gamma") != AUTO:
        raise InvalidValueError(f"tolerance={value!r} is the round-trip error that gamma='auto' chooses its gamma for; "
                                f"with gamma={resolved.get('gamma')!r} it would do nothing: pass gamma='auto' or drop it")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InvalidValueError(f"tolerance must be a relative round-trip error in (0, 1), e.g. 1e-6; got {value!r}")
    return float(value)


def _check_lattice(value, resolved: dict):
    return check_lattice_option(value, resolved["gamma"])


def _check_p(value, resolved: dict) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"EDICT mixing weight p must be a number in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise InvalidValueError(f"EDICT mixing weight p must be in (0, 1], got {float(value)}")
    return float(value)


def _positive_int(name):
    def check(value, resolved: dict) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
            raise InvalidValueError(f"{name} must be a positive integer, got {value!r}")
        return int(value)

    return check


def _positive_float(name):
    def check(value, resolved: dict) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidValueError(f"{name} must be a positive number, got {value!r}")
        return float(value)

    return check


def _non_negative_float(name):
    def check(value, resolved: dict) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InvalidValueError(f"{name} must be a number >= 0, got {value!r}")
        return float(value)

    return check


def _fraction(name):
    def check(value, resolved: dict) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InvalidValueError(f"{name} must be a number in [0, 1], got {value!r}")
        return float(value)

    return check


def _check_seed(value, resolved: dict) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise InvalidValueError(f"seed must be an integer >= 0, got {value!r}")
    return int(value)


def _check_leapfrog(value, resolved: dict) -> bool:
    if not isinstance(value, bool):
        raise InvalidTypeError(f"leapfrog must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """A method option: its default, its check (value, options resolved so far) -> normalised value, and a line
    of documentation."""

    default: Any
    check: Callable[[Any, dict], Any]
    doc: str


#: ``gamma="auto"``: the smallest gamma whose inversion stays exact within ``tolerance``
#: (:func:`bdia.exactness.auto_gamma`)
AUTO = "auto"

GAMMA = Option(1.0, _check_gamma, "BDIA's mixing weight in [0, 1] (paper eq. 29); 0 is DDIM, inversion needs > 0; "
               "'auto' picks the smallest that inverts within tolerance (bdia.auto_gamma)")
TOLERANCE = Option(None, _check_tolerance, "gamma='auto': the relative round-trip error to keep within (default 1e-6)")
LATTICE = Option(None, _check_lattice, "True or a spacing 2**-k: states on a dyadic lattice, bit-exact (gamma = 1)")
P = Option(0.93, _check_p, "EDICT's mixing weight in (0, 1]")
LEAPFROG = Option(True, _check_leapfrog, "EDICT: swap the half-steps' order on every other step (reference code)")


SEED = Option(0, _check_seed, "the seed of the noise a method draws: ddpm-inversion's for each timestep (and for "
              "sampling), rf-inversion's target noise, flowedit's noise at each step")
CONTROLLER = Option(0.5, _fraction("controller"), "rf-inversion: the inversion's controller toward a fixed noise "
                    "sample (the paper's gamma, published 0.5); 0 is Euler inversion")
ETA = Option(0.9, _fraction("eta"), "rf-inversion: the edit's controller toward the source image (published 0.9); 0 is "
             "Euler")
START = Option(0.0, _fraction("start"), "rf-inversion: where the edit's controller starts, a fraction of the steps")
STOP = Option(0.25, _fraction("stop"), "rf-inversion: where it stops (published 7 of 28 steps)")
INNER_STEPS = Option(10, _positive_int("inner_steps"), "null-text: Adam steps per diffusion step")
LR = Option(1e-2, _positive_float("lr"), "null-text: Adam's learning rate at the noisy end (decays by 1% a step)")
EARLY_STOP = Option(1e-5, _non_negative_float("early_stop"),
                    "null-text: stop a step's optimisation below this loss (plus early_stop_growth per step)")
EARLY_STOP_GROWTH = Option(2e-5, _non_negative_float("early_stop_growth"),
                           "null-text: how much the early-stop loss grows per step (the reference code's 2e-5)")
