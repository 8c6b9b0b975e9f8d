"""The dyadic lattice on which BDIA's leapfrog map (gamma = 1) is undone bit for bit.

With ``gamma = 1`` BDIA is ``z_{i-1} = z_{i+1} + g_i(z_i)``. If every state is a multiple of a power of two
``2^-k`` and every increment ``g_i`` is rounded onto the same lattice before it is added, each addition
is exact as long as ``|z| < 2^(m - k)`` (``m`` the dtype's mantissa bits), so the inverse
``z_{i+1} = z_{i-1} - g_i(z_i)`` retraces the states exactly. This module chooses the spacing, checks the
option and the range; the rounding itself is :func:`bdia.steps.lattice_round`.
"""

from __future__ import annotations

import math

import torch

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["MANTISSA_BITS", "check_lattice_option", "lattice_spacing", "default_lattice", "resolve_lattice",
           "check_lattice_range"]

#: mantissa bits of each dtype (without the implicit bit): multiples of 2^-k below 2^(bits - k) add exactly
MANTISSA_BITS = {torch.float64: 52, torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}


def check_lattice_option(lattice, gamma: float):
    """The ``lattice`` option normalised: ``None`` (off), ``"auto"`` (chosen per dtype when the run starts) or a
    power of two ``2^-k``; the lattice needs ``gamma = 1``."""
    if lattice is None or lattice is False:
        return None
    if gamma != 1.0:
        raise InvalidValueError(
            f"lattice needs gamma = 1, got gamma={gamma}: only then is the update the leapfrog map "
            "z_{i-1} = z_{i+1} + g_i(z_i), whose carried state has coefficient exactly 1; with gamma < 1 the inverse "
            "divides by gamma and the rounding cannot be undone")
    if lattice is True or lattice == "auto":
        return "auto"
    if isinstance(lattice, bool) or not isinstance(lattice, (int, float)) or not math.isfinite(lattice) or lattice <= 0:
        raise InvalidTypeError(f"lattice must be True (a spacing chosen for the dtype), or a power of two such as "
                               f"2**-40, got {lattice!r}")
    mantissa, _ = math.frexp(lattice)
    if mantissa != 0.5:
        raise InvalidValueError(f"the lattice spacing must be a power of two (2**-k) so that rounding onto it is "
                                f"exact, got {lattice!r}")
    return float(lattice)


def lattice_spacing(dtype: torch.dtype, bound: float) -> float:
    """The finest lattice ``2^-k`` on which ``dtype`` adds states with ``|z| < bound`` exactly:
    ``k = mantissa bits - ceil(log2(bound))``."""
    if dtype not in MANTISSA_BITS:
        raise InvalidTypeError(f"no lattice for {dtype} states; allowed: float64, float32, bfloat16, float16")
    bound_bits = math.ceil(math.log2(bound))
    k = MANTISSA_BITS[dtype] - bound_bits
    if k < 1:
        raise InvalidValueError(f"{dtype} has too few mantissa bits for a lattice on this schedule (|z| up to "
                                f"2^{bound_bits}); use float32 or float64 states")
    return 2.0 ** -k


def default_lattice(dtype: torch.dtype, schedule, num_steps: int) -> float:
    """The lattice spacing ``2^-k`` for states of ``dtype``: ``k = mantissa bits - ceil(log2(bound))``, with the bound
    on ``|z|`` taken as ``8 * init_noise_sigma + 8`` (16 on VP schedules, 1024 on EDM's)."""
    return lattice_spacing(dtype, 8 * schedule.init_noise_sigma(num_steps) + 8)


def resolve_lattice(option, dtype: torch.dtype, schedule, num_steps: int) -> float | None:
    """The spacing a run uses for a checked ``lattice`` option (:func:`check_lattice_option`): ``None`` without a
    lattice, :func:`default_lattice` for ``"auto"``, else the given spacing (if ``dtype`` can hold a lattice)."""
    if option is None:
        return None
    if option == "auto":
        return default_lattice(dtype, schedule, num_steps)
    if dtype not in MANTISSA_BITS:
        raise InvalidTypeError(f"no lattice for {dtype} states; allowed: float64, float32, bfloat16, float16")
    return float(option)


def check_lattice_range(z: torch.Tensor, lattice: float, where: str) -> None:
    """An error when a state has left the range in which its dtype adds multiples of ``lattice`` exactly."""
    limit = 2.0 ** MANTISSA_BITS[z.dtype] * lattice
    top = float(z.abs().max())
    if top >= limit:
        raise InvalidValueError(
            f"{where} a state reached |z| = {top:.4g}, beyond the range in which {z.dtype} adds multiples of the "
            f"lattice {lattice:.3g} exactly (|z| < {limit:.4g}); use a coarser lattice or float64 states")
