"""Reference solutions of the probability-flow ODE (paper eq. 2) with a high-order adaptive solver.

In EDM variables ``x = z / alpha_t`` and ``s = sigma_t / alpha_t`` the ODE reads ``dx/ds = eps(alpha_t x, t)``
(every sampler in :mod:`bdia.steps` is a discretisation of it; DDIM is its Euler method). We integrate
it in ``u = log s``, ``dx/du = s * eps``, with SciPy's DOP853 at tight tolerances. When the end point is
the data end (``s = 0``), the solve stops at ``s_floor`` and finishes with the exact limit
``x(0) = x - s eps``, whose error is ``O(s_floor^2)``.

Meant for exact (toy) models: it evaluates the model at fractional timesteps, down to ``s_floor``.
A rectified flow (:class:`~bdia.flow.FlowMatchSchedule`) starts at ``t = 1``, where ``s`` is infinite:
:func:`solve_flow` integrates its ODE ``dz/dt = v(z, t)`` in ``t`` itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .schedules import Schedule

__all__ = ["solve_probability_flow", "solve_flow"]


def solve_probability_flow(model, z_start: Tensor, schedule: Schedule, t_start: float, t_end: float, *,
                           t_eval=None, rtol: float = 1e-10, atol: float = 1e-10, s_floor: float = 1e-8,
                           method: str = "DOP853"):
    """Integrate the probability-flow ODE of ``model`` from ``z_start`` at ``t_start`` to ``t_end``.

    Returns ``z`` at ``t_end`` (float64, the shape of ``z_start``); with ``t_eval`` (timesteps between
    the two ends, in the direction of travel) returns ``(z_end, [z at each t_eval])``.
    Raises ``RuntimeError`` when the solver fails.
    """
    z_start = torch.as_tensor(z_start, dtype=torch.float64)
    shape = z_start.shape
    s_start = float(schedule.edm_sigma(float(t_start)))
    s_end = float(schedule.edm_sigma(float(t_end)))
    if s_start <= 0:
        raise ValueError("t_start must have sigma_t > 0: the ODE cannot start at the data end")
    finish_at_zero = s_end <= 0
    s_stop = s_floor if finish_at_zero else s_end
    if finish_at_zero and s_floor >= s_start:
        raise ValueError(f"s_floor={s_floor} must be below the starting EDM sigma {s_start:.4g}")

    def state(u: float, y: np.ndarray) -> tuple[float, float, Tensor]:
        s = math.exp(u)
        t = float(schedule.timestep_for_edm_sigma(s))
        return s, t, torch.from_numpy(y).reshape(shape)

    def rhs(u: float, y: np.ndarray) -> np.ndarray:
        s, t, x = state(u, y)
        eps = model(float(schedule.alpha(t)) * x, t)
        return (s * eps).reshape(-1).cpu().numpy()

    u_eval = None
    if t_eval is not None:
        s_eval = [float(schedule.edm_sigma(float(t))) for t in t_eval]
        if any(s <= 0 for s in s_eval):
            raise ValueError("t_eval must not include the data end; it is returned as the final state")
        # the end point is evaluated too: with t_eval, solve_ivp returns only the requested points
        u_eval = np.append(np.log(np.clip(s_eval, min(s_start, s_stop), max(s_start, s_stop))), math.log(s_stop))
    x0 = (z_start / float(schedule.alpha(float(t_start)))).reshape(-1).numpy()
    sol = solve_ivp(rhs, (math.log(s_start), math.log(s_stop)), x0, method=method, rtol=rtol, atol=atol,
                    t_eval=u_eval)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solve failed: {sol.message}")
    x_end = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)
    if finish_at_zero:
        t_floor = float(schedule.timestep_for_edm_sigma(s_stop))
        x_end = x_end - s_stop * model(float(schedule.alpha(t_floor)) * x_end, t_floor)
    z_end = float(schedule.alpha(float(t_end))) * x_end
    if t_eval is None:
        return z_end
    states = [float(schedule.alpha(float(t))) * torch.from_numpy(sol.y[:, k].copy()).reshape(shape)
              for k, t in enumerate(t_eval)]
    return z_end, states


def solve_flow(velocity, z_start: Tensor, t_start: float, t_end: float, *, t_eval=None, rtol: float = 1e-10,
               atol: float = 1e-10, method: str = "DOP853"):
    """Integrate a rectified flow's ODE ``dz/dt = velocity(z, t)`` from ``t_start`` to ``t_end`` (either direction,
    ``t = 1`` included); ``velocity`` returns ``v = eps - x``. Returns ``z`` at ``t_end`` (float64), or with
    ``t_eval`` ``(z_end, [z at each t_eval])``; ``RuntimeError`` when the solver fails."""
    z_start = torch.as_tensor(z_start, dtype=torch.float64)
    shape = z_start.shape

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        return velocity(torch.from_numpy(y).reshape(shape), float(t)).reshape(-1).cpu().numpy()

    evals = None if t_eval is None else np.append(np.asarray(t_eval, dtype=np.float64), float(t_end))
    sol = solve_ivp(rhs, (float(t_start), float(t_end)), z_start.reshape(-1).numpy(), method=method, rtol=rtol,
                    atol=atol, t_eval=evals)
    if not sol.success:
        raise RuntimeError(f"flow ODE solve failed: {sol.message}")
    z_end = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)
    if t_eval is None:
        return z_end
    return z_end, [torch.from_numpy(sol.y[:, k].copy()).reshape(shape) for k in range(len(t_eval))]
