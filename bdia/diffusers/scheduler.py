"""BDIA-DDIM as a diffusers scheduler: a drop-in for ``DDIMScheduler`` in any pipeline::

    pipe.scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=0.5)
    image = pipe("a photo of a cat", num_inference_steps=10).images[0]

The scheduler follows ``DDIMScheduler``'s contract: the same config keys (betas, ``squaredcos_cap_v2``,
``trained_betas``, ``rescale_betas_zero_snr``, ``clip_sample``, ``thresholding``, prediction types, timestep
spacings), the same attributes (``betas``, ``alphas``, ``alphas_cumprod``, ``final_alpha_cumprod``,
``init_noise_sigma``, ``order``), ``add_noise``, ``scale_model_input``, custom ``timesteps``, diffusers'
``step_index`` / ``begin_index`` / ``set_begin_index`` convention, and ``step`` with DDIM's positional
signature. What it does differently is the update (paper eq. 29):

* a step from a timestep of the current grid that continues the previous step is the BDIA update, with
  the sample the previous step started from as ``z_{i+1}``;
* any other step (the first one, one that starts mid-grid as img2img and inpainting do, one after a jump)
  is a DDIM step to the next grid point: it seeds the pair, as the paper's first step does;
* a step from a timestep that is not on the grid is DDIM's own step, to ``t - T // N``, as
  ``DDIMScheduler`` takes it; so are per-sample timestep tensors whose entries differ.

``gamma = 0`` therefore reproduces ``DDIMScheduler`` on the same config to float rounding wherever DDIM's
steps land on its own grid: the ``leading`` spacing, and ``trailing`` when ``N`` divides
``num_train_timesteps``. Where they do not (``linspace``; ``trailing`` otherwise; custom timesteps),
DDIM steps from each timestep to ``t - T // N``, off the grid, while this scheduler steps to the next
timestep of the grid, which is the integration the grid describes.

Clipping and thresholding change the prediction ``x0`` made from ``z_i`` alone, so the update stays a
linear function of ``z_{i+1}`` and :class:`BDIAInverseScheduler` undoes it exactly. ``eta`` must be 0:
a stochastic step cannot be inverted.

:meth:`BDIAScheduler.resume_from` continues from an :class:`bdia.InversionState`, so a standard pipeline
reconstructs or edits an inverted image; :class:`BDIAInverseScheduler` runs the inversion in a custom loop,
like diffusers' ``DDIMInverseScheduler``. ``lattice`` (with ``gamma = 1``) keeps the states on a dyadic
lattice for bit-exact round trips (see :func:`bdia.invert`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from .. import steps
from ..samplers import (AMPLIFICATION_WARN, ExactnessWarning, InversionState, _check_gamma, _check_lattice,
                        _check_lattice_range, _lattice_spacing, rounding_amplification)
from ..schedules import Level, VPSchedule, betas_from_config

__all__ = ["BDIAScheduler", "BDIAInverseScheduler", "BDIASchedulerOutput"]

_SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class BDIASchedulerOutput(BaseOutput):
    """``prev_sample``: the state at the next timestep; ``pred_original_sample``: the x0 prediction there."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class BDIAScheduler(SchedulerMixin, ConfigMixin):
    """Bi-directional integration approximation (BDIA-DDIM) for diffusers pipelines; see the module docstring.

    ``gamma`` in [0, 1] is BDIA's mixing weight (0 gives DDIM, 1 the paper's eq. 26); ``lattice`` (``True``
    or a spacing ``2**-k``, with ``gamma = 1``) rounds states and increments onto a dyadic lattice.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        gamma: float = 1.0,
        lattice: float | bool | None = None,
    ):
        _check_gamma(gamma)
        _check_lattice("bdia", lattice, float(gamma))
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")
        if timestep_spacing not in _SPACINGS:
            raise ValueError(f"timestep_spacing {timestep_spacing!r} is not supported; allowed: {', '.join(_SPACINGS)}")
        betas = betas_from_config(self.config)  # float64, the core's computation
        abar = torch.cumprod(1.0 - betas, dim=0)
        if len(betas) != num_train_timesteps:
            raise ValueError(f"need {num_train_timesteps} betas (num_train_timesteps), got {len(betas)}")
        # the noise levels of every step come from the core's schedule, so that states move between this scheduler
        # and bdia.sample / bdia.invert unchanged; with zero terminal SNR (alpha = 0 at t = T-1) from abar directly
        self._schedule = None if rescale_betas_zero_snr else VPSchedule.from_diffusers_config(self.config)
        self._abar64 = abar
        self._final64 = 1.0 if set_alpha_to_one else float(abar[0])
        # DDIMScheduler's attributes, float32 as there
        self.betas = betas.float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = abar.float()
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy().astype(np.int64))
        self._grid: list[int] = []  # t_N, ..., t_1, then -1 for the data end
        self._resume: InversionState | None = None
        self._begin_index: int | None = None
        self._reset()

    # -- diffusers' bookkeeping --------------------------------------------------------------------
    def _reset(self) -> None:
        self._step_index: int | None = None
        self._prev_sample: torch.Tensor | None = None  # z_{i+1}: the sample the previous step started from
        self._last_index: int | None = None  # grid index of that step

    @property
    def gamma(self) -> float:
        return float(self.config.gamma)

    @property
    def step_index(self) -> int | None:
        """Index (into ``timesteps``) of the next step, once stepping has begun."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Index of the first step, when a pipeline set it (``set_begin_index``)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Where a pipeline starts in ``timesteps`` (img2img and inpainting start mid-grid)."""
        self._begin_index = int(begin_index)

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Index of ``timestep`` in ``schedule_timesteps`` (default: ``timesteps``); ``ValueError`` if absent."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        matches = (schedule.cpu() == float(timestep)).nonzero()
        if len(matches) == 0:
            raise ValueError(f"timestep {float(timestep):g} is not in the schedule {schedule.tolist()}")
        return int(matches[1 if len(matches) > 1 else 0])

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    # -- noise levels ----------------------------------------------------------------------------
    def _level(self, t: int) -> Level:
        if self._schedule is not None:
            return self._schedule.level(int(t))
        abar = float(self._abar64[int(t)]) if t >= 0 else self._final64
        return Level(math.sqrt(abar), math.sqrt(1.0 - abar))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.IntTensor) -> torch.Tensor:
        """``sqrt(abar_t) x + sqrt(1 - abar_t) noise`` for each sample's timestep (as ``DDIMScheduler.add_noise``)."""
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        abar = abar[torch.as_tensor(timesteps, device=original_samples.device).long().flatten()]
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return abar.sqrt().view(shape) * original_samples + (1 - abar).sqrt().view(shape) * noise

    # -- timesteps -------------------------------------------------------------------------------
    def _default_timesteps(self, n: int) -> np.ndarray:
        T = self.config.num_train_timesteps
        if self.config.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        if self.config.timestep_spacing == "leading":
            return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + self.config.steps_offset
        return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1  # trailing

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """The grid of ``num_inference_steps`` timesteps, or the custom descending ``timesteps``."""
        T = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both")
            grid = np.asarray([int(t) for t in timesteps], dtype=np.int64)
            if len(grid) == 0 or np.any(np.diff(grid) >= 0) or grid.min() < 0 or grid.max() >= T:
                raise ValueError(f"custom timesteps must be strictly descending integers in [0, {T - 1}], "
                                 f"got {list(map(int, timesteps))}")
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
            if not 1 <= num_inference_steps <= T:
                raise ValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}, got "
                                 f"{num_inference_steps}")
            grid = self._default_timesteps(int(num_inference_steps))
            if np.any(np.diff(grid) >= 0):
                raise ValueError(f"{self.config.timestep_spacing} spacing repeats timesteps for {num_inference_steps} "
                                 "steps; use fewer steps")
        self.num_inference_steps = len(grid)
        self._grid = [int(t) for t in grid] + [-1]
        self._reset()
        start = 0
        if self._resume is not None:
            state, self._resume = self._resume, None
            start = self._start_from(state, grid)
        self.timesteps = torch.from_numpy(grid[start:].copy()).to(device)

    def _start_from(self, state: InversionState, grid: np.ndarray) -> int:
        if state.num_steps != len(grid):
            raise ValueError(f"step count mismatch: the state was inverted with num_steps={state.num_steps}, the "
                             f"pipeline asked for {len(grid)}")
        full = torch.tensor(self._grid, dtype=torch.float64)
        inverted = state.timesteps.to(torch.float64)
        k = len(full) - len(inverted)
        if k < 0 or not torch.equal(full[k:], inverted):
            raise ValueError("schedule mismatch: the state was inverted on the timesteps "
                             f"{[round(float(t)) for t in inverted]}, this scheduler's grid for "
                             f"{len(grid)} steps is {self._grid}")
        self._prev_sample, self._last_index = state.latents[0], k
        self._step_index = 0
        return k + 1  # the pair covers t_K and t_{K-1}: the pipeline continues at t_{K-1}

    # -- resuming from an inversion ------------------------------------------------------------------
    def resume_from(self, state: InversionState, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Continue from an inversion: the next :meth:`set_timesteps` (with the state's step count) starts at
        ``t_{K-1}`` with ``z_K`` as the previous sample. Returns the latents to pass to the pipeline
        (``pipe(..., latents=scheduler.resume_from(state, dtype=pipe.unet.dtype))``), cast to ``dtype``.

        Casting to a lower precision than the inversion's makes the round trip exact only to that precision
        (an :class:`~bdia.ExactnessWarning` says so); keep the pipeline's latents in the state's dtype for a
        rounding-level round trip (:class:`BDIAEditPipeline` does).
        """
        if state.method != "bdia":
            raise ValueError(f"BDIAScheduler resumes 'bdia' inversions only, this state was made by {state.method!r}")
        if state.options.get("gamma") != self.gamma:
            raise ValueError(f"option mismatch: the state was inverted with gamma={state.options.get('gamma')}, this "
                             f"scheduler has gamma={self.gamma}")
        if state.options.get("lattice") != self._resolved_lattice(state.dtype):
            raise ValueError(f"option mismatch: the state was inverted with lattice={state.options.get('lattice')!r}, "
                             f"this scheduler has lattice={self.config.lattice!r}")
        if dtype is not None and dtype != state.dtype:
            if not (dtype.is_floating_point and state.dtype.is_floating_point):
                raise TypeError(f"cannot resume {state.dtype} latents as {dtype}")
            if torch.finfo(dtype).eps > torch.finfo(state.dtype).eps:
                warnings.warn(f"resuming a {state.dtype} inversion with {dtype} latents: the round trip is exact only to "
                              f"{dtype} rounding; use BDIAEditPipeline, or a pipeline whose latents are {state.dtype}",
                              ExactnessWarning, stacklevel=2)
            state = state.to(dtype)
        self._resume = state
        return state.latents[1]

    # -- the update ---------------------------------------------------------------------------------
    def _resolved_lattice(self, dtype: torch.dtype) -> float | None:
        lattice = _check_lattice("bdia", self.config.lattice, self.gamma)
        if lattice == "auto":  # the bound bdia.default_lattice takes: 8 * init_noise_sigma + 8
            return _lattice_spacing(dtype, 8 * self.init_noise_sigma + 8)
        return lattice

    def _predict(self, model_output: torch.Tensor, sample: torch.Tensor, level: Level,
                 use_clipped_model_output: bool, network_level: Level | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, eps_hat)`` from ``z_i`` and the network's output, clipped or thresholded as the config says.

        ``network_level``: where the network was evaluated, when that differs from the state's ``level`` (the
        seed step of an inversion, eq. 10); a sample prediction's eps is formed there, since at the data end
        ``sigma = 0``.
        """
        kind = self.config.prediction_type
        if kind == "sample" and network_level is not None and level.sigma == 0:
            level = network_level
        if kind == "epsilon":
            x0, eps = steps.x0_prediction(sample, model_output, level), model_output
        elif kind == "v_prediction":
            x0 = level.alpha * sample - level.sigma * model_output
            eps = level.alpha * model_output + level.sigma * sample
        else:  # "sample"
            x0, eps = model_output, (sample - level.alpha * model_output) / level.sigma
        if self.config.thresholding:
            x0 = DDIMScheduler._threshold_sample(self, x0)
        elif self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        if use_clipped_model_output and (self.config.thresholding or self.config.clip_sample):
            eps = (sample - level.alpha * x0) / level.sigma
        return x0, eps

    def _check_step_args(self, eta: float, timestep):
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        if eta != 0.0:
            raise ValueError(f"eta must be 0 for BDIAScheduler, got {eta}: a stochastic step (eta > 0) adds fresh noise, "
                             "which cannot be inverted; use DDIMScheduler for stochastic sampling")
        t = torch.as_tensor(timestep).flatten()
        if t.numel() == 0:
            raise ValueError("empty timestep tensor")
        if torch.any(t != t.round()):
            raise ValueError(f"timesteps must be integers, got {t.tolist()}")
        return t

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> BDIASchedulerOutput | tuple:
        """One step from ``timestep`` (in DDIM's positional signature); see the module docstring for which update.

        ``generator`` and ``variance_noise`` are accepted for DDIM's signature and unused (``eta`` is 0).
        """
        t = self._check_step_args(eta, timestep)
        model_output = model_output.to(sample.dtype)
        if t.numel() > 1 and not torch.all(t == t[0]):
            self._reset()
            return self._per_sample_ddim(model_output, t, sample, use_clipped_model_output, return_dict)
        t = int(t[0])
        lattice = self._resolved_lattice(sample.dtype)
        on_grid = t in self._grid[:-1]
        if on_grid:
            j = self._grid.index(t)
            target, previous = self._grid[j + 1], self._grid[j - 1] if j > 0 else None
        else:
            j, target, previous = None, t - self.config.num_train_timesteps // self.num_inference_steps, None
        level = self._level(t)
        x0, eps = self._predict(model_output, sample, level, use_clipped_model_output)
        if lattice is not None:
            sample = steps.lattice_round(sample, lattice)
        continues = on_grid and self._prev_sample is not None and self._last_index == j - 1
        if continues and lattice is not None:  # the leapfrog map on the lattice (gamma = 1)
            increment = steps.bdia_increment_from_prediction(x0, eps, self._level(previous), self._level(target))
            prev_sample = self._prev_sample.to(sample) + steps.lattice_round(increment, lattice)
        elif continues:
            prev_sample = steps.bdia_from_prediction(self._prev_sample.to(sample), x0, eps, self._level(previous),
                                                     self._level(target), self.gamma)
        else:  # the first step, a jump, or an off-grid timestep: DDIM's step
            prev_sample = steps.ddim_from_prediction(x0, eps, self._level(max(target, -1)))
            if lattice is not None:
                prev_sample = steps.lattice_round(prev_sample, lattice)
        if lattice is not None:
            _check_lattice_range(prev_sample, lattice, f"at timestep {t}")
        self._prev_sample, self._last_index = (sample, j) if on_grid else (None, None)
        self._step_index = (self._step_index or 0) + 1
        if not return_dict:
            return (prev_sample, x0)
        return BDIASchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def _per_sample_ddim(self, model_output, t, sample, use_clipped_model_output, return_dict):
        """Samples at different timesteps: DDIM's step for each, to the next grid point (or ``t - T // N``)."""
        if len(t) != sample.shape[0]:
            raise ValueError(f"{len(t)} timesteps for a batch of {sample.shape[0]} samples")
        outs, x0s = [], []
        for b, tb in enumerate(int(v) for v in t):
            target = self._grid[self._grid.index(tb) + 1] if tb in self._grid[:-1] else \
                tb - self.config.num_train_timesteps // self.num_inference_steps
            x0, eps = self._predict(model_output[b:b + 1], sample[b:b + 1], self._level(tb), use_clipped_model_output)
            outs.append(steps.ddim_from_prediction(x0, eps, self._level(max(target, -1))))
            x0s.append(x0)
        prev_sample, x0 = torch.cat(outs), torch.cat(x0s)
        if not return_dict:
            return (prev_sample, x0)
        return BDIASchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)


class BDIAInverseScheduler(BDIAScheduler):
    """BDIA inversion (data to noise) for a custom diffusers loop; its result feeds :meth:`BDIAScheduler.resume_from`::

        inverse = BDIAInverseScheduler.from_config(pipe.scheduler.config, gamma=0.96)
        inverse.set_timesteps(50)
        for t in inverse.timesteps:
            latents = inverse.step(eps_model(latents, t), t, latents).prev_sample
        state = inverse.inversion_state()

    The first step is one DDIM inversion step from the data (the network at ``t_1``, paper eq. 10): it only
    seeds the pair, and is where this scheduler meets ``DDIMInverseScheduler`` (whose every step is of that
    kind). Every later step is the exact inverse update with the network at the current state, so
    ``timesteps`` is ``[t_1, t_1, t_2, ..., t_{N-1}]``: ``N`` network calls in all, as in :func:`bdia.invert`.
    ``gamma`` must be positive. It warns as :func:`bdia.invert` does: for half-precision latents and when
    ``(1/gamma)^(N-1)`` exceeds 1e3.
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        if self.gamma <= 0:
            raise ValueError("inversion needs gamma > 0: the inverse update divides by gamma")
        super().set_timesteps(num_inference_steps, device, timesteps)
        amp = rounding_amplification("bdia", self.num_inference_steps, gamma=self.gamma)
        if amp > AMPLIFICATION_WARN:
            warnings.warn(f"BDIA inversion with gamma={self.gamma} over {self.num_inference_steps} steps amplifies "
                          f"rounding errors by about (1/gamma)^(N-1) = {amp:.3g}", ExactnessWarning, stacklevel=2)
        ascending = self._grid[::-1]  # -1 (data), t_1, ..., t_N
        calls = [ascending[1]] + ascending[1:-1]
        self._up = ascending
        self._last: torch.Tensor | None = None
        self._count = 0
        self.timesteps = torch.tensor(calls, dtype=torch.int64, device=device)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> BDIASchedulerOutput | tuple:
        """One inversion step: ``z_1`` from the data on the first call, then ``z_{m+1}`` from ``(z_{m-1}, z_m)``."""
        t = self._check_step_args(eta, timestep)
        m = self._count
        if m >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} inversion steps are done; read inversion_state()")
        if t.numel() > 1 and not torch.all(t == t[0]):
            raise ValueError("BDIAInverseScheduler inverts a batch on one grid: all timesteps must be equal")
        expected = int(self.timesteps[m])
        if int(t[0]) != expected:
            raise ValueError(f"step() got timestep {int(t[0])}, the inverse scheduler expected {expected} (step {m})")
        if m == 0 and sample.dtype in (torch.float16, torch.bfloat16):
            warnings.warn(f"inversion in {sample.dtype} is not exact: rounding errors of half precision dominate; use "
                          "float32 or float64 latents", ExactnessWarning, stacklevel=2)
        model_output = model_output.to(sample.dtype)
        lattice = self._resolved_lattice(sample.dtype)
        up = self._up
        if m == 0:  # eq. 10: the network at t_1 on the data, its prediction formed at the data's own level
            if lattice is not None:
                sample = steps.lattice_round(sample, lattice)
            x0, eps = self._predict(model_output, sample, self._level(up[0]), use_clipped_model_output,
                                    self._level(up[1]))
            new = steps.ddim_from_prediction(x0, eps, self._level(up[1]))
            new = new if lattice is None else steps.lattice_round(new, lattice)
        else:
            x0, eps = self._predict(model_output, sample, self._level(up[m]), use_clipped_model_output)
            # in sampling order: z_{m+1} is the "previous" (noisier) state, z_{m-1} the next (cleaner) one
            if lattice is not None:
                increment = steps.bdia_increment_from_prediction(x0, eps, self._level(up[m + 1]),
                                                                 self._level(up[m - 1]))
                new = self._prev_sample.to(sample) - steps.lattice_round(increment, lattice)
            else:
                new = steps.bdia_inverse_from_prediction(self._prev_sample.to(sample), x0, eps, self._level(up[m + 1]),
                                                         self._level(up[m - 1]), self.gamma)
        self._prev_sample, self._last = sample, new
        self._count = m + 1
        self._step_index = self._count
        if not return_dict:
            return (new, x0)
        return BDIASchedulerOutput(prev_sample=new, pred_original_sample=x0)

    def inversion_state(self) -> InversionState:
        """The finished inversion as an :class:`bdia.InversionState`: the pair ``(z_N, z_{N-1})``."""
        if self.num_inference_steps is None or self._count != self.num_inference_steps:
            raise ValueError("the inversion is not finished: run step() once for every entry of timesteps")
        descending = torch.tensor(self._grid, dtype=torch.float64)
        levels = torch.tensor([tuple(self._level(t)) for t in self._grid], dtype=torch.float64)  # as _levels_tensor
        options = {"gamma": self.gamma, "lattice": self._resolved_lattice(self._last.dtype)}
        return InversionState("bdia", self.num_inference_steps, options, descending, (self._last, self._prev_sample),
                              levels=levels)
