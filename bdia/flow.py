"""Rectified-flow models (Stable Diffusion 3, FLUX): the linear path ``z_t = (1 - t) x + t eps`` as a schedule.

With ``alpha_t = 1 - t`` and ``sigma_t = t`` the network predicts the velocity ``v = eps - x = dz/dt``, and a
DDIM step from ``s`` to ``t`` is exactly an Euler step, ``z_t = z_s + (t - s) v``. Every DDIM-family method of
the registry therefore runs on a :class:`FlowMatchSchedule` unchanged, once the model says that it predicts
a velocity (:func:`from_velocity`); BDIA becomes

    z_{i-1} = gamma z_{i+1} + (1 - gamma) z_i + (t_{i-1} - t_i + gamma (t_i - t_{i+1})) v(z_i, t_i),

one velocity call per step, and ``gamma = 1`` is the leapfrog rule ``z_{i-1} = z_{i+1} + (t_{i-1} - t_{i+1}) v``.
The velocity form stays well defined at ``t = 1``, where ``alpha = 0`` and diffusers' flow grids start (the
eps form of the DDIM step divides by ``alpha`` there).

The timesteps of this schedule are the sigmas themselves, ``t`` in ``[0, 1]``; :meth:`FlowMatchSchedule.timesteps`
reproduces diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (static ``shift``, dynamic shifting with
``mu``, ``shift_terminal``, Karras, exponential and beta sigmas), sigma for sigma in float32 as diffusers
computes them, and ends at ``t_0 = 0``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .errors import InvalidTypeError, InvalidValueError
from .predictions import VELOCITY, PredictionModel
from .schedules import Level, Schedule, check_num_steps

__all__ = ["FlowMatchSchedule", "from_velocity", "calculate_shift", "FLOW_CONFIG_KEYS"]

#: the config keys of diffusers' FlowMatchEulerDiscreteScheduler that shape the grid
FLOW_CONFIG_KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
                    "base_image_seq_len", "max_image_seq_len", "shift_terminal", "use_karras_sigmas",
                    "use_exponential_sigmas", "use_beta_sigmas", "time_shift_type")


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """FLUX's resolution-dependent ``mu``: linear in the number of image tokens between ``(base_seq_len, base_shift)``
    and ``(max_seq_len, max_shift)``."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


class FlowMatchSchedule(Schedule):
    """The rectified-flow schedule ``alpha_t = 1 - t``, ``sigma_t = t`` on diffusers' flow-matching grids.

    The arguments are ``FlowMatchEulerDiscreteScheduler``'s config keys, plus ``mu`` (the dynamic shift that
    pipelines compute from the image size; required with ``use_dynamic_shifting``) and ``base_sigmas``, a function
    ``num_steps -> sigmas`` that replaces the default ``linspace`` before shifting (FLUX's pipeline passes
    ``linspace(1, 1/N, N)``). ``stochastic_sampling`` and ``invert_sigmas`` are not grids and are refused by the
    scheduler that reads a config, not here.
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float | None = 0.5, max_shift: float | None = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, shift_terminal: float | None = None, use_karras_sigmas: bool = False,
                 use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", mu: float | None = None,
                 base_sigmas: Callable[[int], np.ndarray] | None = None):
        if sum(map(bool, (use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas))) > 1:
            raise InvalidValueError("only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be "
                                    "set")
        if time_shift_type not in ("exponential", "linear"):
            raise InvalidValueError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}")
        if use_dynamic_shifting and mu is None:
            raise InvalidValueError("mu must be given with use_dynamic_shifting (pipelines compute it from the image "
                                    "size: bdia.flow.calculate_shift)")
        if not shift > 0:
            raise InvalidValueError(f"shift must be positive, got {shift}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.shift, self.use_dynamic_shifting, self.mu = float(shift), bool(use_dynamic_shifting), mu
        self.base_shift, self.max_shift = base_shift, max_shift
        self.base_image_seq_len, self.max_image_seq_len = base_image_seq_len, max_image_seq_len
        self.shift_terminal = shift_terminal
        self.spacing = ("karras" if use_karras_sigmas else "exponential" if use_exponential_sigmas else
                        "beta" if use_beta_sigmas else "linear")
        self.time_shift_type = time_shift_type
        self.base_sigmas = base_sigmas
        # diffusers' training sigmas: 1/T .. 1, shifted unless the shift is dynamic; their ends bound the grid
        T = self.num_train_timesteps
        train = torch.from_numpy(np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T
        if not self.use_dynamic_shifting:
            train = self.shift * train / (1 + (self.shift - 1) * train)
        self.sigma_max, self.sigma_min = train[0].item(), train[-1].item()

    @classmethod
    def from_diffusers_config(cls, config, mu: float | None = None,
                              base_sigmas: Callable[[int], np.ndarray] | None = None) -> "FlowMatchSchedule":
        """The schedule a ``FlowMatchEulerDiscreteScheduler`` config describes (its other keys are ignored)."""
        cfg = dict(config)
        return cls(**{k: cfg[k] for k in FLOW_CONFIG_KEYS if k in cfg}, mu=mu, base_sigmas=base_sigmas)

    def with_grid(self, mu: float | None = None, base_sigmas: Callable[[int], np.ndarray] | None = None):
        """The same schedule with another ``mu`` or ``base_sigmas``."""
        keep = {k: getattr(self, k) for k in ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift",
                                              "max_shift", "base_image_seq_len", "max_image_seq_len", "shift_terminal",
                                              "time_shift_type")}
        return FlowMatchSchedule(**keep, use_karras_sigmas=self.spacing == "karras",
                                 use_exponential_sigmas=self.spacing == "exponential",
                                 use_beta_sigmas=self.spacing == "beta", mu=self.mu if mu is None else mu,
                                 base_sigmas=self.base_sigmas if base_sigmas is None else base_sigmas)

    # -- noise levels -----------------------------------------------------------------------------------
    def _check(self, t):
        values = np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float64)
        if np.any(~np.isfinite(values)) or np.any(values < -1e-12) or np.any(values > 1 + 1e-12):
            raise InvalidValueError(f"timestep {t} outside the flow schedule's range [0, 1]")
        return t

    def alpha(self, t):
        t = self._check(t)
        return 1.0 - (t.to(torch.float64) if torch.is_tensor(t) else np.asarray(t, dtype=np.float64)
                      if np.ndim(t) else float(t))

    def sigma(self, t):
        t = self._check(t)
        return t.to(torch.float64) if torch.is_tensor(t) else np.asarray(t, dtype=np.float64) if np.ndim(t) else float(t)

    def timestep_for_edm_sigma(self, edm_sigma):
        s = edm_sigma.to(torch.float64) if torch.is_tensor(edm_sigma) else np.asarray(edm_sigma, dtype=np.float64)
        t = s / (1.0 + s)
        return t if torch.is_tensor(t) or np.ndim(t) else float(t)

    def euler_variables(self, level: Level) -> tuple[float, float]:
        """``(t, 1)``: the flow's own variables, in which a DDIM step is an Euler step (defined at ``t = 1``)."""
        total = level.alpha + level.sigma
        return level.sigma / total, total

    # -- the grid ---------------------------------------------------------------------------------------
    def _time_shift(self, sigmas):
        if self.time_shift_type == "exponential":
            return math.exp(self.mu) / (math.exp(self.mu) + (1 / sigmas - 1) ** 1.0)
        return self.mu / (self.mu + (1 / sigmas - 1) ** 1.0)

    def sigmas(self, num_steps: int) -> np.ndarray:
        """The float32 sigmas ``t_N, ..., t_1`` that ``FlowMatchEulerDiscreteScheduler.set_timesteps`` computes."""
        check_num_steps(num_steps)
        if self.base_sigmas is not None:
            sigmas = np.array(self.base_sigmas(num_steps)).astype(np.float32)
            if sigmas.shape != (num_steps,):
                raise InvalidValueError(f"base_sigmas gave {sigmas.shape[0]} sigmas for {num_steps} steps")
        else:
            T = self.num_train_timesteps
            sigmas = np.linspace(self.sigma_max * T, self.sigma_min * T, num_steps) / T
        if self.use_dynamic_shifting:
            sigmas = self._time_shift(sigmas)
        else:
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        if self.shift_terminal:
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        low, high = float(sigmas[-1]), float(sigmas[0])
        if self.spacing == "karras":
            ramp = np.linspace(0, 1, num_steps)
            sigmas = (high ** (1 / 7) + ramp * (low ** (1 / 7) - high ** (1 / 7))) ** 7
        elif self.spacing == "exponential":
            sigmas = np.exp(np.linspace(math.log(high), math.log(low), num_steps))
        elif self.spacing == "beta":
            from scipy.stats import beta

            sigmas = np.array([low + ppf * (high - low) for ppf in beta.ppf(1 - np.linspace(0, 1, num_steps), 0.6, 0.6)])
        return torch.from_numpy(np.asarray(sigmas)).to(torch.float32).numpy()

    def timesteps(self, num_steps: int) -> torch.Tensor:
        grid = np.concatenate([self.sigmas(num_steps).astype(np.float64), [0.0]])
        if not np.all(np.diff(grid) < 0):
            raise InvalidValueError(f"this flow grid repeats timesteps for num_steps={num_steps}; use fewer steps")
        return torch.from_numpy(grid)

    def __repr__(self) -> str:
        shift = f"mu={self.mu}" if self.use_dynamic_shifting else f"shift={self.shift}"
        return f"FlowMatchSchedule({shift}, spacing={self.spacing!r}, shift_terminal={self.shift_terminal})"


def from_velocity(model, schedule: Schedule | None = None) -> PredictionModel:
    """``model(z, t) -> v`` declared as a velocity model, ``v = eps - x`` (``dz/dt`` on the linear path): the one place
    where a velocity prediction becomes the core's prediction pair, ``x0_hat = (z - sigma v) / (alpha + sigma)``,
    ``eps_hat = x0_hat + v`` (:class:`~bdia.predictions.PredictionConfig`), which is well defined at ``t = 1``."""
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InvalidTypeError(f"schedule must be a bdia Schedule, got {type(schedule).__name__}")
    return PredictionModel(model, VELOCITY)
