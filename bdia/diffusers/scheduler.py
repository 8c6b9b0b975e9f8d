"""BDIA-DDIM as a diffusers scheduler: a drop-in for ``DDIMScheduler`` in any pipeline::

    pipe.scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=0.5)
    image = pipe("a photo of a cat", num_inference_steps=10).images[0]

The scheduler follows ``DDIMScheduler``'s contract: the same config keys (betas, ``squaredcos_cap_v2``,
``trained_betas``, ``rescale_betas_zero_snr``, ``clip_sample``, ``thresholding``, prediction types, timestep
spacings), the same attributes (``betas``, ``alphas``, ``alphas_cumprod``, ``final_alpha_cumprod``,
``init_noise_sigma``, ``order``), ``add_noise``, ``scale_model_input``, custom ``timesteps``, diffusers'
``step_index`` / ``begin_index`` / ``set_begin_index`` convention, and ``step`` with DDIM's positional
signature. Every number it uses comes from bdia's core: the noise levels and grids from
:class:`~bdia.VPSchedule`, the predictions with their clipping and thresholding from
:class:`~bdia.predictions.PredictionConfig`, the updates from :mod:`bdia.steps`, the lattice from
:mod:`bdia.lattice`, the warnings from :mod:`bdia.exactness`. What it does differently from DDIM is the
update (paper eq. 29):

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
a stochastic step cannot be inverted. (diffusers calls the output of a step ``prev_sample``, the state at
the previous diffusion time: one grid point cleaner; for :class:`BDIAInverseScheduler`, one noisier.)

:meth:`BDIAScheduler.resume_from` continues from an :class:`bdia.InversionState`, so a standard pipeline
reconstructs or edits an inverted image; :class:`BDIAInverseScheduler` runs the inversion in a custom loop,
like diffusers' ``DDIMInverseScheduler``. ``lattice`` (with ``gamma = 1``) keeps the states on a dyadic
lattice for bit-exact round trips (see :func:`bdia.invert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from .. import steps
from ..errors import InvalidTypeError, InvalidValueError
from ..exactness import warn_amplified, warn_half_precision, warn_lower_precision_resume
from ..lattice import check_lattice_range, resolve_lattice
from ..methods import REGISTRY, rounding_amplification
from ..predictions import Prediction, PredictionConfig
from ..samplers import InversionState
from ..schedules import Level, VPSchedule, betas_from_config
from .stepping import SchedulerStepping

__all__ = ["BDIAScheduler", "BDIAInverseScheduler", "BDIASchedulerOutput"]

#: the prediction types of DDIM's contract
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass
class BDIASchedulerOutput(BaseOutput):
    """``prev_sample``: the state one grid point on (diffusers' name); ``pred_original_sample``: the x0 prediction."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class BDIAScheduler(SchedulerStepping, SchedulerMixin, ConfigMixin):
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
        self._options = REGISTRY["bdia"].resolve({"gamma": gamma, "lattice": lattice})
        if prediction_type not in _PREDICTION_TYPES:
            raise InvalidValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got "
                                    f"{prediction_type!r}")
        # the noise levels, grids and predictions of every step come from the core, so that states move between
        # this scheduler and bdia.sample / bdia.invert unchanged
        self._schedule = VPSchedule.from_diffusers_config(self.config)
        self._prediction = PredictionConfig.from_scheduler_config(self.config)
        # DDIMScheduler's attributes, float32 as there
        self.betas = betas_from_config(self.config).float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = self._schedule.alphas_cumprod.float()
        self.final_alpha_cumprod = torch.tensor(self._schedule.final_alpha_cumprod, dtype=torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy().astype(np.int64))
        self._grid: list[int] = []  # t_N, ..., t_1, then -1 for the data end
        self._resume: InversionState | None = None
        self._begin_index: int | None = None
        self._spacings: dict = {}  # lattice spacings by (dtype, num_steps)
        self._reset()

    # -- diffusers' bookkeeping --------------------------------------------------------------------
    def _reset(self) -> None:
        self._step_index: int | None = None
        self._noisier: torch.Tensor | None = None  # z_{i+1}: the sample the previous step started from
        self._noisier_index: int | None = None  # its grid index

    @property
    def gamma(self) -> float:
        return self._options["gamma"]

    @property
    def schedule(self) -> VPSchedule:
        """The core's :class:`~bdia.VPSchedule` of this config (noise levels and grids)."""
        return self._schedule

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def _level(self, t: int) -> Level:
        return self._schedule.level(int(t))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.IntTensor) -> torch.Tensor:
        """``sqrt(abar_t) x + sqrt(1 - abar_t) noise`` for each sample's timestep (as ``DDIMScheduler.add_noise``)."""
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        abar = abar[torch.as_tensor(timesteps, device=original_samples.device).long().flatten()]
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return abar.sqrt().view(shape) * original_samples + (1 - abar).sqrt().view(shape) * noise

    # -- timesteps -------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """The grid of ``num_inference_steps`` timesteps (the core schedule's, for the config's spacing), or the
        custom descending ``timesteps``."""
        T = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise InvalidValueError("pass either num_inference_steps or timesteps, not both")
            grid = np.asarray([int(t) for t in timesteps], dtype=np.int64)
            if len(grid) == 0 or np.any(np.diff(grid) >= 0) or grid.min() < 0 or grid.max() >= T:
                raise InvalidValueError(f"custom timesteps must be strictly descending integers in [0, {T - 1}], "
                                        f"got {list(map(int, timesteps))}")
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise InvalidValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
            if not 1 <= num_inference_steps <= T:
                raise InvalidValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}, got "
                                        f"{num_inference_steps}")
            grid = self._schedule.timesteps(int(num_inference_steps))[:-1].numpy().astype(np.int64)
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
            raise InvalidValueError(f"step count mismatch: the state was inverted with num_steps={state.num_steps}, the "
                                    f"pipeline asked for {len(grid)}")
        full = torch.tensor(self._grid, dtype=torch.float64)
        inverted = state.timesteps.to(torch.float64)
        k = len(full) - len(inverted)
        if k < 0 or not torch.equal(full[k:], inverted):
            raise InvalidValueError("schedule mismatch: the state was inverted on the timesteps "
                                    f"{[round(float(t)) for t in inverted]}, this scheduler's grid for "
                                    f"{len(grid)} steps is {self._grid}")
        self._noisier, self._noisier_index = state.latents[0], k
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
        self.check_resumable(state)
        self.check_lattice_of(state, self._lattice(state.dtype, state.num_steps))
        if dtype is not None and dtype != state.dtype:
            if not (dtype.is_floating_point and state.dtype.is_floating_point):
                raise InvalidTypeError(f"cannot resume {state.dtype} latents as {dtype}")
            warn_lower_precision_resume(state.dtype, dtype, f"use BDIAEditPipeline, or a pipeline whose latents are "
                                        f"{state.dtype}")
            state = state.to(dtype)
        self._resume = state
        return state.latents[1]

    # -- the update ---------------------------------------------------------------------------------
    def _lattice(self, dtype: torch.dtype, num_steps: int) -> float | None:
        """The lattice spacing for ``dtype`` states on a grid of ``num_steps`` (as :func:`bdia.invert` picks it)."""
        key = (dtype, num_steps)
        if key not in self._spacings:
            self._spacings[key] = resolve_lattice(self._options["lattice"], dtype, self._schedule, num_steps)
        return self._spacings[key]

    def _predict(self, model_output: torch.Tensor, sample: torch.Tensor, level: Level,
                 use_clipped_model_output: bool, network_level: Level | None = None) -> Prediction:
        return self._prediction.convert(model_output, sample, level, network_level, use_clipped_model_output)

    def _check_step_args(self, eta: float, timestep):
        if self.num_inference_steps is None:
            raise InvalidValueError("call set_timesteps(num_inference_steps) before step()")
        if eta != 0.0:
            raise InvalidValueError(f"eta must be 0 for BDIAScheduler, got {eta}: a stochastic step (eta > 0) adds "
                                    "fresh noise, which cannot be inverted; use DDIMScheduler for stochastic sampling")
        t = torch.as_tensor(timestep).flatten()
        if t.numel() == 0:
            raise InvalidValueError("empty timestep tensor")
        if torch.any(t != t.round()):
            raise InvalidValueError(f"timesteps must be integers, got {t.tolist()}")
        return t

    def _off_grid_target(self, t: int) -> int:
        """DDIM's target for a timestep off the grid: ``t - T // N`` (the data end below 0)."""
        return max(t - self.config.num_train_timesteps // self.num_inference_steps, -1)

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
        lattice = self._lattice(sample.dtype, self.num_inference_steps)
        on_grid = t in self._grid[:-1]
        j = self._grid.index(t) if on_grid else None
        target = self._grid[j + 1] if on_grid else self._off_grid_target(t)
        x0, eps = self._predict(model_output, sample, self._level(t), use_clipped_model_output)
        if lattice is not None:
            sample = steps.lattice_round(sample, lattice)
        continues = on_grid and self._noisier is not None and self._noisier_index == j - 1
        if continues:
            noisier, z_noisier = self._level(self._grid[j - 1]), self._noisier.to(sample)
            if lattice is not None:  # the leapfrog map on the lattice (gamma = 1)
                increment = steps.bdia_increment_from_prediction(x0, eps, noisier, self._level(target))
                prev_sample = z_noisier + steps.lattice_round(increment, lattice)
            else:
                prev_sample = steps.bdia_from_prediction(z_noisier, x0, eps, noisier, self._level(target), self.gamma)
        else:  # the first step, a jump, or an off-grid timestep: DDIM's step
            prev_sample = steps.ddim_from_prediction(x0, eps, self._level(target))
            if lattice is not None:
                prev_sample = steps.lattice_round(prev_sample, lattice)
        if lattice is not None:
            check_lattice_range(prev_sample, lattice, f"at timestep {t}")
        self._noisier, self._noisier_index = (sample, j) if on_grid else (None, None)
        self._step_index = (self._step_index or 0) + 1
        if not return_dict:
            return (prev_sample, x0)
        return BDIASchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def _per_sample_ddim(self, model_output, t, sample, use_clipped_model_output, return_dict):
        """Samples at different timesteps: DDIM's step for each, to the next grid point (or ``t - T // N``)."""
        if len(t) != sample.shape[0]:
            raise InvalidValueError(f"{len(t)} timesteps for a batch of {sample.shape[0]} samples")
        outs, x0s = [], []
        for b, tb in enumerate(int(v) for v in t):
            target = self._grid[self._grid.index(tb) + 1] if tb in self._grid[:-1] else self._off_grid_target(tb)
            x0, eps = self._predict(model_output[b:b + 1], sample[b:b + 1], self._level(tb), use_clipped_model_output)
            outs.append(steps.ddim_from_prediction(x0, eps, self._level(target)))
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

    ``step(model_output, t, sample)`` takes the network's output at ``(sample, t)``. A step that continues the
    previous one (``t`` is the grid point the previous step arrived at) is the exact inverse update, from the
    pair ``(z_{m-1}, z_m)`` to ``z_{m+1}``; any other step (the first one, one after a jump, one from a timestep
    off the grid) is a DDIM inversion step (paper eq. 10) *to* ``t``, from the grid point below it (from
    ``t - T // N`` off the grid), with the network evaluated at ``t`` on the cleaner state: it seeds the pair,
    and it is exactly a step of ``DDIMInverseScheduler``. So ``timesteps`` is ``[t_1, t_1, t_2, ..., t_{N-1}]``:
    ``N`` network calls in all, as in :func:`bdia.invert`, and a loop may start at any timestep of the grid.
    ``gamma`` must be positive. It warns as :func:`bdia.invert` does: for half-precision latents and when
    ``(1/gamma)^(N-1)`` exceeds 1e3.
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        if self.gamma <= 0:
            raise InvalidValueError("inversion needs gamma > 0: the inverse update divides by gamma")
        super().set_timesteps(num_inference_steps, device, timesteps)
        N = self.num_inference_steps
        warn_amplified("bdia", self.gamma, N, rounding_amplification("bdia", N, gamma=self.gamma))
        self._up = self._grid[::-1]  # -1 (data), t_1, ..., t_N
        self._at: int | None = None  # index into _up of the state the previous step produced
        self._state: torch.Tensor | None = None  # that state, z_m
        self._warned_half = False
        self.timesteps = torch.tensor([self._up[1]] + self._up[1:-1], dtype=torch.int64, device=device)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> BDIASchedulerOutput | tuple:
        """One inversion step (see the class docstring): the exact inverse update when ``timestep`` continues the
        previous step, else a DDIM inversion step to ``timestep``."""
        t = self._check_step_args(eta, timestep)
        if t.numel() > 1 and not torch.all(t == t[0]):
            raise InvalidValueError("BDIAInverseScheduler inverts a batch on one grid: all timesteps must be equal")
        t = int(t[0])
        if not self._warned_half:
            self._warned_half = warn_half_precision(sample.dtype)
        model_output = model_output.to(sample.dtype)
        lattice = self._lattice(sample.dtype, self.num_inference_steps)
        up = self._up
        if lattice is not None:
            sample = steps.lattice_round(sample, lattice)
        m = self._at
        if m is not None and t == up[m] and self._state is not None:  # continues: z_{m+1} from (z_{m-1}, z_m)
            if m + 1 >= len(up):
                raise InvalidValueError(f"all {self.num_inference_steps} inversion steps are done; read "
                                        "inversion_state()")
            x0, eps = self._predict(model_output, sample, self._level(up[m]), use_clipped_model_output)
            noisier, cleaner = self._level(up[m + 1]), self._level(up[m - 1])
            if lattice is not None:
                increment = steps.bdia_increment_from_prediction(x0, eps, noisier, cleaner)
                new = self._cleaner.to(sample) - steps.lattice_round(increment, lattice)
            else:
                new = steps.bdia_inverse_from_prediction(self._cleaner.to(sample), x0, eps, noisier, cleaner,
                                                         self.gamma)
            at = m + 1
        else:  # a seed: eq. 10 from the grid point below t (the data end, or t - T // N off the grid) up to t
            at = up.index(t) if t in up[1:] else None
            start = self._level(up[at - 1] if at is not None else self._off_grid_target(t))
            x0, eps = self._predict(model_output, sample, start, use_clipped_model_output, self._level(t))
            new = steps.ddim_from_prediction(x0, eps, self._level(t))
            if lattice is not None:
                new = steps.lattice_round(new, lattice)
        self._cleaner, self._state, self._at = sample, new, at
        self._step_index = (self._step_index or 0) + 1
        if not return_dict:
            return (new, x0)
        return BDIASchedulerOutput(prev_sample=new, pred_original_sample=x0)

    def inversion_state(self) -> InversionState:
        """The finished inversion as an :class:`bdia.InversionState`: the pair ``(z_N, z_{N-1})``."""
        if self.num_inference_steps is None or self._at != len(self._up) - 1 or self._state is None:
            raise InvalidValueError("the inversion is not finished: run step() once for every entry of timesteps")
        descending = torch.tensor(self._grid, dtype=torch.float64)
        levels = torch.tensor([tuple(self._level(t)) for t in self._grid], dtype=torch.float64)  # as bdia.invert's
        options = {"gamma": self.gamma, "lattice": self._lattice(self._state.dtype, self.num_inference_steps)}
        return InversionState("bdia", self.num_inference_steps, options, descending, (self._state, self._cleaner),
                              levels=levels)
