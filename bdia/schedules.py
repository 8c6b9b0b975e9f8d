"""Noise schedules: the (alpha_t, sigma_t) of paper eq. (1) and the timestep grids samplers walk.

A schedule answers three questions for the samplers:

* ``level(t)``: the noise level ``Level(alpha, sigma)`` of ``z_t = alpha_t x + sigma_t eps``
  at any (also fractional) timestep ``t``;
* ``timesteps(num_steps)``: the descending grid ``t_N > ... > t_1 > t_0`` of ``N + 1`` points,
  whose last point ``t_0`` is the data end of the trajectory. The network is evaluated at
  ``t_N ... t_1`` only; no sampler in this package calls it at ``t_0``;
* ``edm_sigma(t)`` and its inverse ``timestep_for_edm_sigma``: the change of variables to
  the EDM space ``x = z / alpha``, ``sigma_edm = sigma_t / alpha_t`` (Karras et al. 2022), where a
  DDIM step is exactly an Euler step.

Two concrete schedules exist: :class:`VPSchedule`, the discrete variance-preserving schedules of
DDPM and Stable Diffusion (timesteps in the network's own units, 0 .. T-1, with ``t = -1`` standing
for clean data), and :class:`EDMSchedule`, EDM's ``alpha = 1, sigma = t`` with the Karras grid.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np
import torch

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["Level", "Schedule", "VPSchedule", "EDMSchedule", "karras_sigmas", "SPACINGS", "betas_from_config",
           "STABLE_DIFFUSION_CONFIG", "check_num_steps", "edm_variables"]

#: Grid spacings a :class:`VPSchedule` understands; the first three follow diffusers' names.
SPACINGS = ("trailing", "leading", "linspace", "karras")

#: the scheduler config of Stable Diffusion 1.x / 2.x-base (as its repositories publish it)
STABLE_DIFFUSION_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                               beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                               steps_offset=1, prediction_type="epsilon", timestep_spacing="leading")


class Level(NamedTuple):
    """Noise level of one timestep: ``z_t = alpha * x + sigma * eps``."""

    alpha: float
    sigma: float

    @property
    def edm_sigma(self) -> float:
        """The EDM-space noise level ``sigma / alpha`` (infinite where ``alpha = 0``)."""
        return self.sigma / self.alpha if self.alpha else math.inf


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM's grid (Karras et al. 2022, eq. 5): ``num_steps`` sigmas from ``sigma_max`` down to ``sigma_min``.

    The sampler's final point ``sigma = 0`` is not included.
    """
    check_num_steps(num_steps)
    if not 0 < sigma_min < sigma_max:
        raise InvalidValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if num_steps == 1:
        return np.array([sigma_max], dtype=np.float64)
    ramp = np.linspace(0.0, 1.0, num_steps)
    inv_rho = 1.0 / rho
    return (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho


def check_num_steps(num_steps) -> None:
    """An error unless ``num_steps`` is an integer of at least 1."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise InvalidTypeError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 1:
        raise InvalidValueError(f"num_steps must be at least 1, got {num_steps}")


def betas_from_config(config) -> torch.Tensor:
    """The float64 betas a diffusers scheduler config describes: ``trained_betas``, or ``beta_schedule`` ``linear``,
    ``scaled_linear`` (linear in sqrt(beta)) or ``squaredcos_cap_v2`` (the cosine schedule of Nichol and Dhariwal
    2021, ``abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2``, each beta capped at 0.999), rescaled to zero terminal
    SNR when ``rescale_betas_zero_snr`` (Lin et al. 2024: ``sqrt(abar)`` shifted to end at 0 and rescaled to keep
    its start)."""
    cfg = dict(config)
    n = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    kind = cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(np.asarray(cfg["trained_betas"], dtype=np.float64))
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        s = np.arange(n + 1, dtype=np.float64) / n
        abar = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.from_numpy(np.minimum(1.0 - abar[1:] / abar[:-1], 0.999))
    else:
        raise InvalidValueError(f"beta_schedule {kind!r} is not supported; allowed: 'linear', 'scaled_linear', "
                         "'squaredcos_cap_v2' or trained_betas")
    if betas.dim() != 1 or len(betas) < 2:
        raise InvalidValueError(f"need at least 2 betas, got shape {tuple(betas.shape)}")
    if "num_train_timesteps" in cfg and len(betas) != n:
        raise InvalidValueError(f"need {n} betas (num_train_timesteps), got {len(betas)}")
    if cfg.get("rescale_betas_zero_snr"):
        root = torch.cumprod(1.0 - betas, dim=0).sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * (first / (first - last))
        abar = root**2
        betas = 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])
    if not torch.all(torch.isfinite(betas)) or not torch.all((betas > 0) & (betas <= 1)):
        bad = betas[~(torch.isfinite(betas) & (betas > 0) & (betas <= 1))]
        raise InvalidValueError(f"betas must lie in (0, 1]; this config gives values such as {bad[:3].tolist()} "
                         "(check beta_start, beta_end, beta_schedule and trained_betas)")
    return betas


def edm_variables(level: Level) -> tuple[float, float]:
    """``(sigma / alpha, alpha)``: EDM space, ``x = z / alpha`` against ``s = sigma / alpha``, where a DDIM step is an
    Euler step of ``dx/ds = eps``."""
    return level.edm_sigma, level.alpha


class Schedule(ABC):
    """The interface the samplers use; see the module docstring."""

    def euler_variables(self, level: Level) -> tuple[float, float]:
        """``(lam, scale)``: the time variable ``lam`` and the state scale (``x = z / scale``) in which a DDIM step is an
        Euler step; second-order rules built on step sizes in ``lam`` (O-BELM) use them. EDM space by default
        (:func:`edm_variables`); a rectified flow uses its own ``(t, 1)``, which stays finite at ``t = 1``."""
        return edm_variables(level)

    @abstractmethod
    def alpha(self, t):
        """``alpha_t``; ``t`` a float or a tensor of timesteps."""

    @abstractmethod
    def sigma(self, t):
        """``sigma_t``; ``t`` a float or a tensor of timesteps."""

    @abstractmethod
    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The float64 grid ``[t_N, ..., t_1, t_0]`` (strictly descending, ``N + 1`` points)."""

    @abstractmethod
    def timestep_for_edm_sigma(self, edm_sigma):
        """Inverse of :meth:`edm_sigma`: the timestep at which ``sigma_t / alpha_t == edm_sigma``."""

    def level(self, t) -> Level:
        """``Level(alpha_t, sigma_t)`` as Python floats (float64 precision)."""
        t = float(t)
        return Level(float(self.alpha(t)), float(self.sigma(t)))

    def edm_sigma(self, t):
        """EDM-space noise level ``sigma_t / alpha_t`` (zero at the data end, infinite where ``alpha_t = 0``)."""
        alpha, sigma = self.alpha(t), self.sigma(t)
        if torch.is_tensor(alpha):
            return sigma / alpha
        with np.errstate(divide="ignore"):
            value = np.divide(sigma, alpha)
        return float(value) if np.ndim(value) == 0 else value

    def init_noise_sigma(self, num_steps: int) -> float:
        """Standard deviation of ``z_{t_N}`` for unit-variance data: ``sqrt(alpha^2 + sigma^2)`` at ``t_N``.

        Multiply standard normal noise by this to start sampling (1 for VP schedules, about
        ``sigma_max`` for EDM), as diffusers' ``init_noise_sigma`` does.
        """
        lvl = self.level(self.timesteps(num_steps)[0])
        return math.hypot(lvl.alpha, lvl.sigma)


class VPSchedule(Schedule):
    """Discrete variance-preserving schedule: ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``.

    ``alphas_cumprod[k]`` is ``abar`` at the integer timestep ``k = 0 .. T-1`` (diffusers' convention).
    The data end is ``t = -1`` with ``abar = final_alpha_cumprod`` (1.0: clean data, ``sigma = 0``;
    diffusers' ``set_alpha_to_one=False`` uses ``abar_0`` instead). Between the integer knots
    ``log abar`` is interpolated linearly, so fractional timesteps are allowed and the map from
    ``t`` to the EDM noise level is exactly invertible. The last entry may be 0 (zero terminal SNR,
    Lin et al. 2024): there ``alpha = 0``, which a model that predicts eps cannot start from (see
    :mod:`bdia.predictions`).

    ``spacing`` chooses the grid of :meth:`timesteps`:

    * ``"trailing"`` (default): diffusers' trailing spacing, ``t_N = T - 1``; with ``T`` divisible by
      ``N`` the grid is uniform all the way to ``t_0 = -1``;
    * ``"leading"``: diffusers' DDIM default (``k * (T // N) + steps_offset``), as Stable Diffusion uses;
    * ``"linspace"``: ``round(linspace(0, T - 1, N))``;
    * ``"karras"``: EDM's grid (rho = 7) between the schedule's smallest and largest EDM sigma
      (``sigma_max`` capped at 80), mapped to fractional timesteps.
    """

    def __init__(
        self,
        alphas_cumprod,
        *,
        final_alpha_cumprod: float = 1.0,
        spacing: str = "trailing",
        steps_offset: int = 0,
        name: str | None = None,
    ):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten().cpu()
        if abar.numel() < 2:
            raise InvalidValueError("alphas_cumprod needs at least 2 entries")
        if not (torch.all(abar[:-1] > 0) and torch.all(abar < 1) and abar[-1] >= 0):
            raise InvalidValueError("alphas_cumprod must lie strictly between 0 and 1 (the last entry may be 0: zero "
                                    "terminal SNR)")
        if not torch.all(abar[1:] < abar[:-1]):
            raise InvalidValueError("alphas_cumprod must be strictly decreasing")
        if not 0 < final_alpha_cumprod <= 1:
            raise InvalidValueError(f"final_alpha_cumprod must be in (0, 1], got {final_alpha_cumprod}")
        if final_alpha_cumprod < float(abar[0]):
            raise InvalidValueError("final_alpha_cumprod must be at least alphas_cumprod[0] (less noise than t = 0)")
        if spacing not in SPACINGS:
            raise InvalidValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
        self.alphas_cumprod = abar
        self.final_alpha_cumprod = float(final_alpha_cumprod)
        self.spacing = spacing
        self.steps_offset = int(steps_offset)
        self.name = name
        self.num_train_timesteps = abar.numel()
        # knots t = -1, 0, ..., T-1 of log abar, interpolated linearly
        self._knots_t = np.arange(-1, self.num_train_timesteps, dtype=np.float64)
        with np.errstate(divide="ignore"):  # log 0 = -inf at a zero-SNR end: alpha = 0 there
            self._knots_log_abar = np.concatenate([[math.log(final_alpha_cumprod)], np.log(abar.numpy())])

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_betas(cls, betas, **kwargs) -> "VPSchedule":
        betas = torch.as_tensor(betas, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0), **kwargs)

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000, **kwargs):
        """DDPM's linear beta schedule (1e-4 -> 0.02), as ``google/ddpm-cifar10-32`` uses."""
        kwargs.setdefault("name", f"linear({beta_start}, {beta_end})")
        return cls.from_betas(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64), **kwargs)

    @classmethod
    def scaled_linear(
        cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000, **kwargs
    ):
        """Stable Diffusion's ``scaled_linear`` schedule (linear in sqrt(beta), 0.00085 -> 0.012)."""
        kwargs.setdefault("name", f"scaled_linear({beta_start}, {beta_end})")
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls.from_betas(betas, **kwargs)

    @classmethod
    def stable_diffusion(cls) -> "VPSchedule":
        """What Stable Diffusion 1.x / 2.x-base's scheduler config gives (:data:`STABLE_DIFFUSION_CONFIG`):
        ``scaled_linear`` 0.00085 -> 0.012 over 1000 steps on the ``leading`` grid with ``steps_offset=1``, ending
        at ``abar_0`` (``set_alpha_to_one=False``). :meth:`scaled_linear` gives the same betas on the trailing grid
        that ends at clean data."""
        return cls.from_diffusers_config(STABLE_DIFFUSION_CONFIG)

    @classmethod
    def ddpm(cls, **kwargs) -> "VPSchedule":
        """DDPM (CIFAR10 and friends): ``linear`` 1e-4 -> 0.02 over 1000 steps."""
        return cls.linear(1e-4, 0.02, 1000, **kwargs)

    @classmethod
    def from_diffusers_config(cls, config) -> "VPSchedule":
        """The schedule a diffusers DDIM-style scheduler config describes: its betas (:func:`betas_from_config`,
        zero terminal SNR included), ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one``."""
        cfg = dict(config)
        abar = torch.cumprod(1.0 - betas_from_config(cfg), dim=0)
        final = 1.0 if cfg.get("set_alpha_to_one", True) else float(abar[0])
        spacing = cfg.get("timestep_spacing", "leading")
        if spacing not in ("leading", "trailing", "linspace"):
            raise InvalidValueError(f"timestep_spacing {spacing!r} is not supported; allowed: leading, trailing, linspace")
        kind = "trained" if cfg.get("trained_betas") is not None else cfg.get("beta_schedule", "linear")
        return cls(abar, final_alpha_cumprod=final, spacing=spacing, steps_offset=int(cfg.get("steps_offset", 0)),
                   name=f"{kind}({cfg.get('beta_start', 1e-4)}, {cfg.get('beta_end', 0.02)})")

    def with_spacing(self, spacing: str, steps_offset: int | None = None) -> "VPSchedule":
        """The same noise levels with another timestep grid."""
        return VPSchedule(self.alphas_cumprod, final_alpha_cumprod=self.final_alpha_cumprod, spacing=spacing,
                          steps_offset=self.steps_offset if steps_offset is None else steps_offset, name=self.name)

    # -- noise levels -------------------------------------------------------------------------
    def _log_abar(self, t):
        t_arr = np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float64)
        lo, hi = self._knots_t[0], self._knots_t[-1]
        if np.any(~np.isfinite(t_arr)) or np.any(t_arr < lo - 1e-9) or np.any(t_arr > hi + 1e-9):
            raise InvalidValueError(f"timestep {t} outside this schedule's range [-1, {self.num_train_timesteps - 1}]")
        return np.interp(t_arr, self._knots_t, self._knots_log_abar)

    def _wrap(self, t, value: np.ndarray):
        if torch.is_tensor(t):
            return torch.as_tensor(value, dtype=torch.float64, device=t.device)
        return float(value) if np.ndim(value) == 0 else value

    def alpha(self, t):
        return self._wrap(t, np.exp(0.5 * self._log_abar(t)))

    def sigma(self, t):
        # -expm1 keeps sigma accurate where abar is close to 1
        return self._wrap(t, np.sqrt(-np.expm1(self._log_abar(t))))

    def timestep_for_edm_sigma(self, edm_sigma):
        s = np.asarray(edm_sigma.detach().cpu().numpy() if torch.is_tensor(edm_sigma) else edm_sigma, dtype=np.float64)
        lo = math.sqrt(1.0 / self.final_alpha_cumprod - 1.0)
        hi = math.sqrt(math.expm1(-self._knots_log_abar[-1]))
        if np.any(~np.isfinite(s)) or np.any(s < lo * (1 - 1e-12)) or np.any(s > hi * (1 + 1e-12)):
            raise InvalidValueError(f"EDM sigma {edm_sigma} outside this schedule's range [{lo:.4g}, {hi:.4g}]")
        log_abar = -np.log1p(s * s)  # abar = 1 / (1 + s^2)
        # log abar is piecewise linear and decreasing in t: invert on the reversed knots
        t = np.interp(log_abar, self._knots_log_abar[::-1], self._knots_t[::-1])
        return self._wrap(edm_sigma, t)

    # -- grids --------------------------------------------------------------------------------
    def timesteps(self, num_steps: int) -> torch.Tensor:
        check_num_steps(num_steps)
        T = self.num_train_timesteps
        if self.spacing == "karras":
            s_min = float(self.edm_sigma(0.0))
            s_max = min(80.0, float(self.edm_sigma(T - 1.0)))
            calls = self.timestep_for_edm_sigma(karras_sigmas(num_steps, s_min, s_max))
            calls[0], calls[-1] = min(calls[0], T - 1.0), max(calls[-1], 0.0)
        else:
            if num_steps > T:
                raise InvalidValueError(f"num_steps={num_steps} exceeds the schedule's {T} training timesteps")
            if self.spacing == "trailing":
                calls = np.round(np.arange(T, 0, -T / num_steps)) - 1
            elif self.spacing == "leading":
                calls = (np.arange(num_steps)[::-1] * (T // num_steps)).astype(np.float64) + self.steps_offset
            else:  # linspace
                calls = np.round(np.linspace(0, T - 1, num_steps))[::-1]
            calls = np.clip(calls, 0, T - 1)
        grid = np.concatenate([np.asarray(calls, dtype=np.float64), [-1.0]])
        if not np.all(np.diff(grid) < 0):
            raise InvalidValueError(f"{self.spacing} spacing gives repeated timesteps for num_steps={num_steps}; use fewer steps")
        return torch.from_numpy(grid.copy())

    def __repr__(self) -> str:
        return (f"VPSchedule({self.name or 'custom'}, T={self.num_train_timesteps}, spacing={self.spacing!r}, "
                f"final_alpha_cumprod={self.final_alpha_cumprod:.6g})")


class EDMSchedule(Schedule):
    """EDM's schedule (Karras et al. 2022): ``alpha_t = 1``, ``sigma_t = t``; the Karras grid, then ``t_0 = 0``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise InvalidValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64)) if torch.is_tensor(t) else 1.0

    def sigma(self, t):
        if torch.is_tensor(t):
            return t.to(torch.float64)
        if np.ndim(t):
            return np.asarray(t, dtype=np.float64)
        return float(t)

    def timestep_for_edm_sigma(self, edm_sigma):
        return self.sigma(edm_sigma)

    def timesteps(self, num_steps: int) -> torch.Tensor:
        sig = karras_sigmas(num_steps, self.sigma_min, self.sigma_max, self.rho)
        return torch.from_numpy(np.concatenate([sig, [0.0]]))

    def __repr__(self) -> str:
        return f"EDMSchedule(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"
