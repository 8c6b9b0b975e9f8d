"""Pure update rules, one per method and direction.

Every function maps tensors to tensors with the schedule values passed in as
:class:`~bdia.schedules.Level` tuples ``(alpha, sigma)``. One naming convention holds in the whole library,
whatever the direction of travel: ``z`` is the current state ``z_i`` at ``level``, ``z_noisier`` is
``z_{i+1}`` (one grid point towards noise) and ``z_cleaner`` is ``z_{i-1}`` (one grid point towards data),
with ``level_noisier`` and ``level_cleaner`` their noise levels. A single-step rule goes from ``level`` to
``target``. ``eps = eps(z_i, t_i)`` is the network's noise prediction at the current state.

The two-step rules come in two forms: on ``eps`` (the paper's equations) and on the two predictions
``(x0_hat, eps_hat)`` made from ``z_i`` (:class:`~bdia.predictions.Prediction`), which is what the samplers
and schedulers use, because a network may predict ``v`` or ``x0`` and ``x0_hat`` may be clipped. The
inverse functions solve the same relation for ``z_noisier``.

Methods whose step needs a second network evaluation (EDICT, Heun) take ``eps_fn``, the network at a
fixed timestep, as a function of the state alone.

Coefficients are Python floats, so every result keeps the dtype and device of its inputs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .errors import InvalidValueError
from .schedules import Level, edm_variables

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
    "edict_coupling",
    "edict_inverse_coupling",
    "obelm_gamma",
    "obelm_step",
    "obelm_inverse_step",
    "heun_step",
    "bdia_edm_step",
    "bdia_edm_increment",
    "bdia_edm_inverse_step",
    "ddpm_posterior_std",
    "ddpm_mean_from_prediction",
]

EpsFn = Callable[[Tensor], Tensor]
HalfStep = Callable[[Tensor, Tensor], Tensor]


def x0_prediction(z: Tensor, eps: Tensor, level: Level) -> Tensor:
    """The clean-data prediction ``(z_i - sigma_i eps) / alpha_i`` inside DDIM's update (paper eq. 6)."""
    return (z - level.sigma * eps) / level.alpha


def ddim_from_prediction(x0_hat: Tensor, eps_hat: Tensor, target: Level) -> Tensor:
    """DDIM's update written on its two predictions (paper eq. 6): ``alpha_target x0_hat + sigma_target eps_hat``."""
    return target.alpha * x0_hat + target.sigma * eps_hat


def ddim_step(z: Tensor, eps: Tensor, level: Level, target: Level) -> Tensor:
    """One DDIM step from ``level`` to ``target`` (paper eq. 6), in either time direction.

    ``z_target = alpha_target * (z - sigma * eps) / alpha + sigma_target * eps``. In EDM space (``x = z / alpha``,
    ``s = sigma / alpha``) this is exactly an Euler step of ``dx/ds = eps``.
    """
    return ddim_from_prediction(x0_prediction(z, eps, level), eps, target)


def ddim_inversion_step(z: Tensor, eps: Tensor, level: Level, target: Level) -> Tensor:
    """Classic DDIM inversion (paper eq. 10): one DDIM step towards more noise.

    Unlike the exact inverse (eq. 9) it uses ``eps`` evaluated at the *known* cleaner state,
    ``eps = eps(z, t_target)``: this approximation is what makes DDIM round trips drift.
    """
    return ddim_step(z, eps, level, target)


def bdia_from_prediction(z_noisier: Tensor, x0_hat: Tensor, eps_hat: Tensor, level_noisier: Level,
                         level_cleaner: Level, gamma: float) -> Tensor:
    """BDIA-DDIM (paper eq. 29) on the predictions ``(x0_hat, eps_hat)`` made from ``z_i``: ``z_{i-1}``.

    ``DDIM_{i->i-1} + gamma (z_{i+1} - DDIM_{i->i+1})``: the forward DDIM step plus ``gamma`` times the part of
    ``z_{i+1}`` that the backward DDIM step from ``z_i`` does not explain. The update is linear in ``z_{i+1}``
    whatever function of ``z_i`` the predictions are (clipped, thresholded, from a v-prediction), so
    :func:`bdia_inverse_from_prediction` undoes it exactly.
    """
    forward = ddim_from_prediction(x0_hat, eps_hat, level_cleaner)
    backward = ddim_from_prediction(x0_hat, eps_hat, level_noisier)
    return forward + gamma * (z_noisier - backward)


def bdia_inverse_from_prediction(z_cleaner: Tensor, x0_hat: Tensor, eps_hat: Tensor, level_noisier: Level,
                                 level_cleaner: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_from_prediction`: ``z_{i+1}`` from ``z_{i-1}`` and the predictions at ``z_i``."""
    if gamma <= 0:
        raise InvalidValueError(f"the BDIA inverse divides by gamma; need gamma > 0, got {gamma}")
    forward = ddim_from_prediction(x0_hat, eps_hat, level_cleaner)
    backward = ddim_from_prediction(x0_hat, eps_hat, level_noisier)
    return backward + (z_cleaner - forward) / gamma


def bdia_step(z_noisier: Tensor, z: Tensor, eps: Tensor, level_noisier: Level, level: Level, level_cleaner: Level,
              gamma: float) -> Tensor:
    """BDIA-DDIM update (paper eq. 29; ``gamma = 1`` is eq. 26) from ``(z_{i+1}, z_i)`` to ``z_{i-1}``.

    ``z_{i-1} = gamma z_{i+1} + (1 - gamma) z_i - gamma Delta(t_i -> t_{i+1} | z_i) + Delta(t_i -> t_{i-1} | z_i)``,
    computed as :func:`bdia_from_prediction`. ``gamma = 0`` is plain DDIM.
    """
    return bdia_from_prediction(z_noisier, x0_prediction(z, eps, level), eps, level_noisier, level_cleaner, gamma)


def bdia_inverse_step(z_cleaner: Tensor, z: Tensor, eps: Tensor, level_noisier: Level, level: Level,
                      level_cleaner: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_step` (paper eq. 28 for ``gamma = 1``): ``z_{i+1}`` from ``(z_i, z_{i-1})``.

    ``z_{i+1} = DDIM_{i->i+1}(z_i) + (z_{i-1} - DDIM_{i->i-1}(z_i)) / gamma``. For ``gamma = 1`` this is
    :func:`bdia_step` with ``t_{i-1}`` and ``t_{i+1}`` swapped (Lemma 1, time symmetry). The division
    amplifies rounding errors by about ``1 / gamma`` per step.
    """
    return bdia_inverse_from_prediction(z_cleaner, x0_prediction(z, eps, level), eps, level_noisier, level_cleaner,
                                        gamma)


def bdia_increment_from_prediction(x0_hat: Tensor, eps_hat: Tensor, level_noisier: Level,
                                   level_cleaner: Level) -> Tensor:
    """BDIA's increment ``g_i = DDIM_{i->i-1} - DDIM_{i->i+1}`` on the predictions made from ``z_i``
    (the ``gamma = 1`` update is ``z_{i-1} = z_{i+1} + g_i``)."""
    return ddim_from_prediction(x0_hat, eps_hat, level_cleaner) - ddim_from_prediction(x0_hat, eps_hat, level_noisier)


def bdia_increment(z: Tensor, eps: Tensor, level_noisier: Level, level: Level, level_cleaner: Level) -> Tensor:
    """BDIA's increment ``g_i(z_i) = Delta(t_i -> t_{i-1} | z_i) - Delta(t_i -> t_{i+1} | z_i)`` (paper eq. 26).

    With ``gamma = 1`` the update is the leapfrog map ``z_{i-1} = z_{i+1} + g_i(z_i)`` and its inverse
    ``z_{i+1} = z_{i-1} - g_i(z_i)``: the coefficient of the carried state is exactly 1 and ``g_i``
    depends on ``z_i`` alone, which is what makes bit-exact inversion on a lattice possible.
    """
    return bdia_increment_from_prediction(x0_prediction(z, eps, level), eps, level_noisier, level_cleaner)


def lattice_round(z: Tensor, spacing: float) -> Tensor:
    """``z`` rounded to the nearest multiple of ``spacing`` (a power of two, so the rounding itself is exact).

    Sums and differences of multiples of ``2^-k`` below ``2^(m - k)`` in magnitude (``m`` the dtype's
    mantissa bits) are exact in floating point: a leapfrog update on such values can be undone bit for bit.
    """
    return torch.round(z / spacing) * spacing


def edict_coupling(x: Tensor, y: Tensor, half_step: HalfStep, p: float, swap: bool = False) -> tuple[Tensor, Tensor]:
    """EDICT's coupled step (paper eqs. 11-14) around a half-step ``half_step(z, other)``: ``z`` advanced with the
    network evaluated at ``other``.

    ``x' = half_step(x, y)``, ``y' = half_step(y, x')``, then the mixing ``x'' = p x' + (1-p) y'``,
    ``y'' = p y' + (1-p) x''``. With ``swap`` the two half-steps run in the other order (``y`` first), as the
    reference code's leapfrog does on every other step; the mixing order is the same either way.
    """
    if swap:
        y = half_step(y, x)
        x = half_step(x, y)
    else:
        x = half_step(x, y)
        y = half_step(y, x)
    x = p * x + (1 - p) * y
    y = p * y + (1 - p) * x
    return x, y


def edict_inverse_coupling(x: Tensor, y: Tensor, half_step_back: HalfStep, p: float,
                           swap: bool = False) -> tuple[Tensor, Tensor]:
    """Exact inverse of :func:`edict_coupling` (paper eqs. 15-18), with ``half_step_back`` the inverse half-step.

    Undoes the mixing first, then the two half-steps in reverse order.
    """
    y = (y - (1 - p) * x) / p
    x = (x - (1 - p) * y) / p
    if swap:
        x = half_step_back(x, y)
        y = half_step_back(y, x)
    else:
        y = half_step_back(y, x)
        x = half_step_back(x, y)
    return x, y


def edict_step(x: Tensor, y: Tensor, eps_fn: EpsFn, level: Level, target: Level, p: float,
               swap: bool = False) -> tuple[Tensor, Tensor]:
    """One EDICT step (paper eqs. 11-14) of the coupled pair ``(x, y)`` from ``level`` to ``target``.

    ``x' = DDIM(x; eps(y))``, ``y' = DDIM(y; eps(x'))``, then the mixing (:func:`edict_coupling`). ``eps_fn`` is
    the network at ``level``'s timestep.
    """
    return edict_coupling(x, y, lambda z, other: ddim_step(z, eps_fn(other), level, target), p, swap)


def edict_inverse_step(x: Tensor, y: Tensor, eps_fn: EpsFn, level: Level, target: Level, p: float,
                       swap: bool = False) -> tuple[Tensor, Tensor]:
    """Exact inverse of :func:`edict_step` (paper eqs. 15-18): the pair at ``level`` from the pair at ``target``.

    ``eps_fn`` is the network at ``level``'s timestep, as in the forward step.
    """
    return edict_inverse_coupling(x, y, lambda z, other: ddim_step(z, eps_fn(other), target, level), p, swap)


def obelm_gamma(level_noisier: Level, level: Level, level_cleaner: Level,
                variables: Callable[[Level], tuple[float, float]] = edm_variables) -> float:
    """O-BELM's weight of the carried state ``z_{i+1}``: ``(h_i / h_{i+1})^2 scale_{i-1} / scale_{i+1}``, with the step
    sizes ``h_i = lam_i - lam_{i-1}``, ``h_{i+1} = lam_{i+1} - lam_i`` in the ``variables`` where DDIM is Euler:
    by default EDM space, ``lam = sigma / alpha`` and ``scale = alpha`` (a rectified flow passes its ``(t, 1)``,
    :meth:`bdia.schedules.Schedule.euler_variables`).

    O-BELM (Wang et al. 2024) is BDIA-DDIM with this step-dependent ``gamma``: its update
    ``(h_i^2/h_{i+1}^2)(alpha_{i-1}/alpha_{i+1}) z_{i+1} + ((h_{i+1}^2 - h_i^2)/h_{i+1}^2)(alpha_{i-1}/alpha_i) z_i
    - (h_i (h_i + h_{i+1}) / h_{i+1}) alpha_{i-1} eps`` equals :func:`bdia_step` with ``gamma = obelm_gamma``.
    Since it is not 1, O-BELM's carried state cannot live on a lattice.
    """
    (lam_noisier, scale_noisier), (lam, _), (lam_cleaner, scale_cleaner) = (
        variables(lvl) for lvl in (level_noisier, level, level_cleaner))
    h, h_noisier = lam - lam_cleaner, lam_noisier - lam
    return (h / h_noisier) ** 2 * scale_cleaner / scale_noisier


def obelm_step(z_noisier: Tensor, z: Tensor, eps: Tensor, level_noisier: Level, level: Level,
               level_cleaner: Level) -> Tensor:
    """O-BELM update (Wang et al. 2024): exact, second-order two-step rule for ``z_{i-1}`` (see :func:`obelm_gamma`).

    With ``h_i = sigma_i/alpha_i - sigma_{i-1}/alpha_{i-1}``:
    ``z_{i-1} = (h_i^2/h_{i+1}^2)(alpha_{i-1}/alpha_{i+1}) z_{i+1}
    + ((h_{i+1}^2 - h_i^2)/h_{i+1}^2)(alpha_{i-1}/alpha_i) z_i - (h_i (h_i + h_{i+1}) / h_{i+1}) alpha_{i-1} eps``.
    """
    return bdia_step(z_noisier, z, eps, level_noisier, level, level_cleaner,
                     obelm_gamma(level_noisier, level, level_cleaner))


def obelm_inverse_step(z_cleaner: Tensor, z: Tensor, eps: Tensor, level_noisier: Level, level: Level,
                       level_cleaner: Level) -> Tensor:
    """Exact inverse of :func:`obelm_step`: the same linear relation solved for ``z_{i+1}``."""
    return bdia_inverse_step(z_cleaner, z, eps, level_noisier, level, level_cleaner,
                             obelm_gamma(level_noisier, level, level_cleaner))


def heun_step(z: Tensor, eps: Tensor, eps_fn_target: EpsFn, level: Level, target: Level) -> Tensor:
    """EDM's Heun step (Karras et al. 2022, Alg. 1) in EDM space ``x = z / alpha``, ``s = sigma / alpha``.

    Euler predictor ``x_e = x_i + (s_{i-1} - s_i) eps_i``, then the trapezoidal corrector with
    ``eps_fn_target(alpha_{i-1} x_e)``, the network at ``target``'s timestep. Samplers use a plain Euler
    (= DDIM) step instead for the last step, as EDM does.
    """
    h = target.edm_sigma - level.edm_sigma
    x = z / level.alpha
    eps_predicted = eps_fn_target(target.alpha * (x + h * eps))
    return target.alpha * (x + (0.5 * h) * (eps + eps_predicted))


def _bdia_edm_parts(z: Tensor, z_forward: Tensor, eps: Tensor, level_noisier: Level, level: Level,
                    level_cleaner: Level) -> tuple[Tensor, Tensor]:
    x = z / level.alpha
    x_backward = x + (level_noisier.edm_sigma - level.edm_sigma) * eps  # Euler i -> i+1
    return z_forward / level_cleaner.alpha, x_backward


def bdia_edm_increment(z: Tensor, z_forward: Tensor, eps: Tensor, level_noisier: Level, level: Level,
                       level_cleaner: Level) -> Tensor:
    """BDIA-EDM's increment with ``gamma = 1``, in EDM space: ``Heun(s_i -> s_{i-1} | x_i) - Euler(s_i -> s_{i+1} | x_i)``.

    ``x_{i-1} = x_{i+1} + increment`` is then :func:`bdia_edm_step` with ``gamma = 1``; on a schedule with
    ``alpha = 1`` (EDM's) ``x`` is ``z`` and the update is a leapfrog map like BDIA-DDIM's.
    """
    x_forward, x_backward = _bdia_edm_parts(z, z_forward, eps, level_noisier, level, level_cleaner)
    return x_forward - x_backward


def bdia_edm_step(z_noisier: Tensor, z: Tensor, z_forward: Tensor, eps: Tensor, level_noisier: Level, level: Level,
                  level_cleaner: Level, gamma: float) -> Tensor:
    """BDIA-EDM update, in EDM space ``x = z / alpha`` (this project's definition, see the book).

    ``x_{i-1} = gamma x_{i+1} + (1 - gamma) x_i - gamma Euler(s_i -> s_{i+1} | x_i) + Heun(s_i -> s_{i-1} | x_i)``,
    computed as ``Heun_{i->i-1}(x_i) + gamma (x_{i+1} - Euler_{i->i+1}(x_i))``. ``z_forward`` is the
    forward estimate of ``z_{i-1}`` from ``z_i`` (:func:`heun_step`, or the Euler step on the last step);
    the backward Euler estimate reuses ``eps``, so the update costs no extra network call.
    """
    x_forward, x_backward = _bdia_edm_parts(z, z_forward, eps, level_noisier, level, level_cleaner)
    return level_cleaner.alpha * (x_forward + gamma * (z_noisier / level_noisier.alpha - x_backward))


def bdia_edm_inverse_step(z_cleaner: Tensor, z: Tensor, z_forward: Tensor, eps: Tensor, level_noisier: Level,
                          level: Level, level_cleaner: Level, gamma: float) -> Tensor:
    """Exact inverse of :func:`bdia_edm_step`: ``x_{i+1} = Euler_{i->i+1}(x_i) + (x_{i-1} - Heun_{i->i-1}(x_i)) / gamma``."""
    if gamma <= 0:
        raise InvalidValueError(f"the BDIA-EDM inverse divides by gamma; need gamma > 0, got {gamma}")
    x_forward, x_backward = _bdia_edm_parts(z, z_forward, eps, level_noisier, level, level_cleaner)
    return level_noisier.alpha * (x_backward + (z_cleaner / level_cleaner.alpha - x_forward) / gamma)


def ddpm_posterior_std(level: Level, target: Level) -> float:
    """The noise scale of DDPM's posterior step from ``level`` to the cleaner ``target``: DDIM's ``sigma`` with
    ``eta = 1`` (Song et al. 2021, eq. 16), ``(sigma_target / sigma) sqrt(1 - (alpha / alpha_target)^2)``."""
    if level.sigma == 0:
        return 0.0
    return (target.sigma / level.sigma) * max(0.0, 1.0 - (level.alpha / target.alpha) ** 2) ** 0.5


def ddpm_mean_from_prediction(x0_hat: Tensor, eps_hat: Tensor, target: Level, std: float) -> Tensor:
    """The mean of DDPM's posterior step towards ``target`` on the predictions, ``alpha_target x0_hat +
    sqrt(sigma_target^2 - std^2) eps_hat``; a step adds ``std`` times fresh noise, or edit-friendly DDPM inversion's
    stored noise map (Huberman-Spiegelglas et al. 2024, eq. 3)."""
    return target.alpha * x0_hat + max(0.0, target.sigma ** 2 - std ** 2) ** 0.5 * eps_hat
