"""Pure update rules, one per method and direction.

Every function maps tensors to tensors with the schedule values passed in as
:class:`~bdia.schedules.Level` tuples ``(alpha, sigma)``. Names follow the paper's sampling
order: ``z_prev = z_{i+1}`` (noisier), ``z_cur = z_i``, ``z_next = z_{i-1}`` (cleaner), and
``eps_cur = eps(z_i, t_i)`` is the network's noise prediction at the current state. The inverse
functions solve the same relation for ``z_prev``.

Methods whose step needs a second network evaluation (EDICT, Heun) take ``eps_fn``, the
network at a fixed timestep, as a function of the state alone.

Coefficients are Python floats, so every result keeps the dtype and device of its inputs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .schedules import Level

__all__ = [
    "x0_prediction",
    "ddim_from_prediction",
    "ddim_step",
    "ddim_inversion_step",
    "bdia_step",
    "bdia_inverse_step",
    "bdia_from_prediction",
    "bdia_inverse_from_prediction",
    "bdia_increment",
    "bdia_increment_from_prediction",
    "lattice_round",
    "edict_step",
    "edict_inverse_step",
    "obelm_step",
    "obelm_inverse_step",
    "heun_step",
    "bdia_edm_step",
    "bdia_edm_increment",
    "bdia_edm_inverse_step",
]

EpsFn = Callable[[Tensor], Tensor]


def x0_prediction(z_cur: Tensor, eps_cur: Tensor, level_cur: Level) -> Tensor:
    """The clean-data prediction ``(z_i - sigma_i eps) / alpha_i`` inside DDIM's update (paper eq. 6)."""
    return (z_cur - level_cur.sigma * eps_cur) / level_cur.alpha


def ddim_from_prediction(x0_hat: Tensor, eps_hat: Tensor, level_next: Level) -> Tensor:
    """DDIM's update written on its two predictions (paper eq. 6): ``alpha_next x0_hat + sigma_next eps_hat``.

    Schedulers that clip or threshold ``x0_hat``, or whose networks predict ``v`` or ``x0``, form the
    predictions from ``z_i`` alone and step with this.
    """
    return level_next.alpha * x0_hat + level_next.sigma * eps_hat


def ddim_step(z_cur: Tensor, eps_cur: Tensor, level_cur: Level, level_next: Level) -> Tensor:
    """One DDIM step from ``t_cur`` to ``t_next`` (paper eq. 6), in either time direction.

    ``z_next = alpha_next * (z_cur - sigma_cur * eps) / alpha_cur + sigma_next * eps``. In EDM
    space (``x = z / alpha``, ``s = sigma / alpha``) this is exactly an Euler step of
    ``dx/ds = eps``.
    """
    return ddim_from_prediction(x0_prediction(z_cur, eps_cur, level_cur), eps_cur, level_next)


def ddim_inversion_step(z_cur: Tensor, eps_cur: Tensor, level_cur: Level, level_next: Level) -> Tensor:
    """Classic DDIM inversion (paper eq. 10): one DDIM step towards more noise.

    Unlike the exact inverse (eq. 9) it uses ``eps`` evaluated at the *known* cleaner state,
    ``eps_cur = eps(z_cur, t_next)``: this approximation is what makes DDIM round trips drift.
    """
    return ddim_step(z_cur, eps_cur, level_cur, level_next)


def bdia_step(z_prev: Tensor, z_cur: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
              level_next: Level, gamma: float) -> Tensor:
    """BDIA-DDIM update (paper eq. 29; ``gamma = 1`` is eq. 26) from ``(z_{i+1}, z_i)`` to ``z_{i-1}``.

    ``z_{i-1} = gamma z_{i+1} + (1 - gamma) z_i - gamma Delta(t_i -> t_{i+1} | z_i) + Delta(t_i -> t_{i-1} | z_i)``,
    computed in the equivalent form ``DDIM_{i->i-1}(z_i) + gamma (z_{i+1} - DDIM_{i->i+1}(z_i))``: the forward
    DDIM step plus ``gamma`` times the part of ``z_{i+1}`` that the backward DDIM step from ``z_i``
    does not explain. ``gamma = 0`` is plain DDIM.
    """
    return bdia_from_prediction(z_prev, x0_prediction(z_cur, eps_cur, level_cur), eps_cur, level_prev, level_next, gamma)


def bdia_from_prediction(z_prev: Tensor, x0_hat: Tensor, eps_hat: Tensor, level_prev: Level, level_next: Level,
                         gamma: float) -> Tensor:
    """:func:`bdia_step` on the predictions ``(x0_hat, eps_hat)`` made from ``z_i`` (paper eq. 29).

    The update stays linear in ``z_{i+1}`` whatever function of ``z_i`` the predictions are (clipped,
    thresholded, from a v-prediction), so :func:`bdia_inverse_from_prediction` undoes it exactly.
    """
    forward = ddim_from_prediction(x0_hat, eps_hat, level_next)
    backward = ddim_from_prediction(x0_hat, eps_hat, level_prev)
    return forward + gamma * (z_prev - backward)


def bdia_inverse_from_prediction(z_next: Tensor, x0_hat: Tensor, eps_hat: Tensor, level_prev: Level,
                                 level_next: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_from_prediction`: ``z_{i+1}`` from ``z_{i-1}`` and the predictions at ``z_i``."""
    if gamma <= 0:
        raise ValueError(f"the BDIA inverse divides by gamma; need gamma > 0, got {gamma}")
    forward = ddim_from_prediction(x0_hat, eps_hat, level_next)
    backward = ddim_from_prediction(x0_hat, eps_hat, level_prev)
    return backward + (z_next - forward) / gamma


def bdia_inverse_step(z_next: Tensor, z_cur: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
                      level_next: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_step` (paper eq. 28 for ``gamma = 1``): ``z_{i+1}`` from ``(z_i, z_{i-1})``.

    ``z_{i+1} = DDIM_{i->i+1}(z_i) + (z_{i-1} - DDIM_{i->i-1}(z_i)) / gamma``. For ``gamma = 1`` this is
    :func:`bdia_step` with ``t_{i-1}`` and ``t_{i+1}`` swapped (Lemma 1, time symmetry). The division
    amplifies rounding errors by about ``1 / gamma`` per step.
    """
    return bdia_inverse_from_prediction(z_next, x0_prediction(z_cur, eps_cur, level_cur), eps_cur, level_prev,
                                        level_next, gamma)


def bdia_increment(z_cur: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level, level_next: Level) -> Tensor:
    """BDIA's increment ``g_i(z_i) = Delta(t_i -> t_{i-1} | z_i) - Delta(t_i -> t_{i+1} | z_i)`` (paper eq. 26).

    With ``gamma = 1`` the update is the leapfrog map ``z_{i-1} = z_{i+1} + g_i(z_i)`` and its inverse
    ``z_{i+1} = z_{i-1} - g_i(z_i)``: the coefficient of the carried state is exactly 1 and ``g_i``
    depends on ``z_i`` alone, which is what makes bit-exact inversion on a lattice possible.
    """
    return bdia_increment_from_prediction(x0_prediction(z_cur, eps_cur, level_cur), eps_cur, level_prev, level_next)


def bdia_increment_from_prediction(x0_hat: Tensor, eps_hat: Tensor, level_prev: Level, level_next: Level) -> Tensor:
    """:func:`bdia_increment` on the predictions ``(x0_hat, eps_hat)`` made from ``z_i`` (clipped, thresholded or
    from a v-prediction, as :func:`bdia_from_prediction` takes them)."""
    return ddim_from_prediction(x0_hat, eps_hat, level_next) - ddim_from_prediction(x0_hat, eps_hat, level_prev)


def lattice_round(z: Tensor, spacing: float) -> Tensor:
    """``z`` rounded to the nearest multiple of ``spacing`` (a power of two, so the rounding itself is exact).

    Sums and differences of multiples of ``2^-k`` below ``2^(m - k)`` in magnitude (``m`` the dtype's
    mantissa bits) are exact in floating point: a leapfrog update on such values can be undone bit for bit.
    """
    return torch.round(z / spacing) * spacing


def edict_step(x: Tensor, y: Tensor, eps_fn: EpsFn, level_cur: Level, level_next: Level, p: float,
               swap: bool = False) -> tuple[Tensor, Tensor]:
    """One EDICT step (paper eqs. 11-14) of the coupled pair ``(x, y)`` from ``t_cur`` to ``t_next``.

    ``x' = DDIM(x; eps(y))``, ``y' = DDIM(y; eps(x'))``, then the mixing ``x'' = p x' + (1-p) y'``,
    ``y'' = p y' + (1-p) x''``. ``eps_fn`` is the network at ``t_cur``. With ``swap`` the two half-steps
    run in the other order (``y`` first), as the reference code's leapfrog does on every other step;
    the mixing order is the same either way.
    """
    if swap:
        y = ddim_step(y, eps_fn(x), level_cur, level_next)
        x = ddim_step(x, eps_fn(y), level_cur, level_next)
    else:
        x = ddim_step(x, eps_fn(y), level_cur, level_next)
        y = ddim_step(y, eps_fn(x), level_cur, level_next)
    x = p * x + (1 - p) * y
    y = p * y + (1 - p) * x
    return x, y


def edict_inverse_step(x: Tensor, y: Tensor, eps_fn: EpsFn, level_cur: Level, level_next: Level, p: float,
                       swap: bool = False) -> tuple[Tensor, Tensor]:
    """Exact inverse of :func:`edict_step` (paper eqs. 15-18): the pair at ``t_cur`` from the pair at ``t_next``.

    Undoes the mixing first, then the two half-steps in reverse order. ``eps_fn`` is the network at
    ``t_cur``, as in the forward step.
    """
    y = (y - (1 - p) * x) / p
    x = (x - (1 - p) * y) / p
    if swap:
        x = ddim_step(x, eps_fn(y), level_next, level_cur)
        y = ddim_step(y, eps_fn(x), level_next, level_cur)
    else:
        y = ddim_step(y, eps_fn(x), level_next, level_cur)
        x = ddim_step(x, eps_fn(y), level_next, level_cur)
    return x, y


def _obelm_coefficients(level_prev: Level, level_cur: Level, level_next: Level) -> tuple[float, float, float]:
    # EDM-space step sizes: h_i = s_i - s_{i-1}, h_{i+1} = s_{i+1} - s_i
    h_cur = level_cur.edm_sigma - level_next.edm_sigma
    h_prev = level_prev.edm_sigma - level_cur.edm_sigma
    ratio = (h_cur / h_prev) ** 2
    c_prev = ratio * level_next.alpha / level_prev.alpha
    c_cur = (1.0 - ratio) * level_next.alpha / level_cur.alpha
    c_eps = -h_cur * (h_cur + h_prev) / h_prev * level_next.alpha
    return c_prev, c_cur, c_eps


def obelm_step(z_prev: Tensor, z_cur: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
               level_next: Level) -> Tensor:
    """O-BELM update (Wang et al. 2024): exact, second-order two-step rule for ``z_{i-1}``.

    With ``h_i = sigma_i/alpha_i - sigma_{i-1}/alpha_{i-1}``:
    ``z_{i-1} = (h_i^2/h_{i+1}^2)(alpha_{i-1}/alpha_{i+1}) z_{i+1}
    + ((h_{i+1}^2 - h_i^2)/h_{i+1}^2)(alpha_{i-1}/alpha_i) z_i - (h_i (h_i + h_{i+1}) / h_{i+1}) alpha_{i-1} eps``.
    """
    c_prev, c_cur, c_eps = _obelm_coefficients(level_prev, level_cur, level_next)
    return c_prev * z_prev + c_cur * z_cur + c_eps * eps_cur


def obelm_inverse_step(z_next: Tensor, z_cur: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
                       level_next: Level) -> Tensor:
    """Exact inverse of :func:`obelm_step`: the same linear relation solved for ``z_{i+1}``."""
    c_prev, c_cur, c_eps = _obelm_coefficients(level_prev, level_cur, level_next)
    return (z_next - c_cur * z_cur - c_eps * eps_cur) / c_prev


def heun_step(z_cur: Tensor, eps_cur: Tensor, eps_fn_next: EpsFn, level_cur: Level, level_next: Level) -> Tensor:
    """EDM's Heun step (Karras et al. 2022, Alg. 1) in EDM space ``x = z / alpha``, ``s = sigma / alpha``.

    Euler predictor ``x_e = x_i + (s_{i-1} - s_i) eps_i``, then the trapezoidal corrector with
    ``eps_fn_next(alpha_{i-1} x_e)``, the network at ``t_{i-1}``. Samplers use a plain Euler
    (= DDIM) step instead for the last step, as EDM does.
    """
    h = level_next.edm_sigma - level_cur.edm_sigma
    x_cur = z_cur / level_cur.alpha
    eps_pred = eps_fn_next(level_next.alpha * (x_cur + h * eps_cur))
    return level_next.alpha * (x_cur + (0.5 * h) * (eps_cur + eps_pred))


def _bdia_edm_parts(z_cur: Tensor, z_forward: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
                    level_next: Level) -> tuple[Tensor, Tensor]:
    x_cur = z_cur / level_cur.alpha
    x_backward = x_cur + (level_prev.edm_sigma - level_cur.edm_sigma) * eps_cur  # Euler i -> i+1
    return z_forward / level_next.alpha, x_backward


def bdia_edm_increment(z_cur: Tensor, z_forward: Tensor, eps_cur: Tensor, level_prev: Level, level_cur: Level,
                       level_next: Level) -> Tensor:
    """BDIA-EDM's increment with ``gamma = 1``, in EDM space: ``Heun(s_i -> s_{i-1} | x_i) - Euler(s_i -> s_{i+1} | x_i)``.

    ``x_{i-1} = x_{i+1} + increment`` is then :func:`bdia_edm_step` with ``gamma = 1``; on a schedule with
    ``alpha = 1`` (EDM's) ``x`` is ``z`` and the update is a leapfrog map like BDIA-DDIM's.
    """
    x_forward, x_backward = _bdia_edm_parts(z_cur, z_forward, eps_cur, level_prev, level_cur, level_next)
    return x_forward - x_backward


def bdia_edm_step(z_prev: Tensor, z_cur: Tensor, z_forward: Tensor, eps_cur: Tensor, level_prev: Level,
                  level_cur: Level, level_next: Level, gamma: float) -> Tensor:
    """BDIA-EDM update, in EDM space ``x = z / alpha`` (this project's definition, see the book).

    ``x_{i-1} = gamma x_{i+1} + (1 - gamma) x_i - gamma Euler(s_i -> s_{i+1} | x_i) + Heun(s_i -> s_{i-1} | x_i)``,
    computed as ``Heun_{i->i-1}(x_i) + gamma (x_{i+1} - Euler_{i->i+1}(x_i))``. ``z_forward`` is the
    forward estimate of ``z_{i-1}`` from ``z_i`` (:func:`heun_step`, or the Euler step on the last step);
    the backward Euler estimate reuses ``eps_cur``, so the update costs no extra network call.
    """
    x_forward, x_backward = _bdia_edm_parts(z_cur, z_forward, eps_cur, level_prev, level_cur, level_next)
    return level_next.alpha * (x_forward + gamma * (z_prev / level_prev.alpha - x_backward))


def bdia_edm_inverse_step(z_next: Tensor, z_cur: Tensor, z_forward: Tensor, eps_cur: Tensor, level_prev: Level,
                          level_cur: Level, level_next: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_edm_step`: ``x_{i+1} = Euler_{i->i+1}(x_i) + (x_{i-1} - Heun_{i->i-1}(x_i)) / gamma``."""
    if gamma <= 0:
        raise ValueError(f"the BDIA-EDM inverse divides by gamma; need gamma > 0, got {gamma}")
    x_forward, x_backward = _bdia_edm_parts(z_cur, z_forward, eps_cur, level_prev, level_cur, level_next)
    return level_prev.alpha * (x_backward + (z_next / level_next.alpha - x_forward) / gamma)
