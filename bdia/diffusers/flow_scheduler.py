"""BDIA for rectified-flow pipelines (Stable Diffusion 3, FLUX): a drop-in for ``FlowMatchEulerDiscreteScheduler``::

    pipe.scheduler = BDIAFlowMatchScheduler.from_config(pipe.scheduler.config, gamma=0.5)
    image = pipe("a photo of a cat", num_inference_steps=20).images[0]

It takes the stock scheduler's config keys (``shift``, ``use_dynamic_shifting`` with ``base_shift``,
``max_shift``, ``base_image_seq_len``, ``max_image_seq_len``, ``shift_terminal``, Karras, exponential and beta
sigmas, ``time_shift_type``), ``set_timesteps(num_inference_steps, device, sigmas=, mu=, timesteps=)``,
``scale_noise`` for img2img, ``index_for_timestep``, ``step_index`` / ``begin_index``, and ``step`` in its
positional order. Its sigma grid is the core's :class:`bdia.FlowMatchSchedule`, its update BDIA's in flow
variables (paper eq. 29 with the network's velocity, :mod:`bdia.flow`): the first step of a run is an Euler
step, every later one the BDIA update with the sample the previous step started from, so ``gamma = 0`` is the
stock Euler scheduler. ``stochastic_sampling`` (fresh noise per step) and ``invert_sigmas`` (Mochi's reversed
grid) are refused: neither can be inverted.

The stock scheduler computes in float32 and casts each new sample back to the model's dtype, which makes a
round trip through a bfloat16 transformer inexact. This one returns ``prev_sample`` in that dtype too (so
pipelines work as before), but carries the state in float32, or in the sample's own dtype when that is
finer, and continues from it whenever the pipeline hands back what it returned.
:class:`BDIAFlowMatchInverseScheduler` inverts in a custom loop; :meth:`BDIAFlowMatchScheduler.resume_from`
continues a standard pipeline from an :class:`bdia.InversionState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .. import steps
from ..errors import InvalidTypeError, InvalidValueError
from ..exactness import warn_amplified, warn_half_precision
from ..flow import FlowMatchSchedule
from ..lattice import check_lattice_range, resolve_lattice
from ..methods import REGISTRY, rounding_amplification
from ..predictions import VELOCITY
from ..samplers import InversionState
from .stepping import SchedulerStepping

__all__ = ["BDIAFlowMatchScheduler", "BDIAFlowMatchInverseScheduler", "BDIAFlowMatchSchedulerOutput"]



@dataclass
class BDIAFlowMatchSchedulerOutput(BaseOutput):
    """``prev_sample``: the state one grid point on, in the model output's dtype (diffusers' name)."""

    prev_sample: torch.FloatTensor


class BDIAFlowMatchScheduler(SchedulerStepping, SchedulerMixin, ConfigMixin):
    """BDIA in rectified-flow variables for diffusers' flow-matching pipelines; see the module docstring."""

    _compatibles: list = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        invert_sigmas: bool = False,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: str = "exponential",
        stochastic_sampling: bool = False,
        gamma: float = 1.0,
        lattice: float | bool | None = None,
    ):
        self._options = REGISTRY["bdia"].resolve({"gamma": gamma, "lattice": lattice})
        if stochastic_sampling:
            raise InvalidValueError("stochastic_sampling adds fresh noise at every step, which cannot be inverted; use "
                                    "FlowMatchEulerDiscreteScheduler for stochastic sampling")
        if invert_sigmas:
            raise InvalidValueError("invert_sigmas (Mochi's reversed grid, ending at sigma = 1) is not supported")
        # validates the grid keys; the training timesteps and sigmas are the stock scheduler's
        FlowMatchSchedule.from_diffusers_config(self.config, mu=0.0 if use_dynamic_shifting else None)
        T = num_train_timesteps
        sigmas = torch.from_numpy(np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T
        if not use_dynamic_shifting:
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.timesteps = sigmas * T
        self.sigmas = sigmas
        self.sigma_min, self.sigma_max = self.sigmas[-1].item(), self.sigmas[0].item()
        self._shift = shift
        self.num_inference_steps = None
        self._grid: list[float] = []  # the full sigma grid of the last set_timesteps, ending at 0
        self._schedule: FlowMatchSchedule | None = None
        self._resume: InversionState | None = None
        self._spacings: dict = {}
        self._begin_index: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._step_index: int | None = None
        self._noisier: tuple | None = None  # (z_{i+1}, its sigma): the sample the previous step started from
        self._exact: torch.Tensor | None = None  # the last output at full precision

    # -- diffusers' bookkeeping ---------------------------------------------------------------------------
    @property
    def gamma(self) -> float:
        return self._options["gamma"]

    @property
    def shift(self) -> float:
        return self._shift

    def set_shift(self, shift: float) -> None:
        self._shift = shift

    @property
    def schedule(self) -> FlowMatchSchedule | None:
        """The core schedule of the last :meth:`set_timesteps` (its ``mu`` and custom sigmas included)."""
        return self._schedule

    @property
    def exact_sample(self) -> torch.Tensor | None:
        """The last step's output at the precision the scheduler carries it (``prev_sample`` is its cast)."""
        return self._exact

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor | None = None) -> torch.Tensor:
        """img2img's forward process ``sigma noise + (1 - sigma) sample`` at each timestep (as the stock scheduler)."""
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        timestep = torch.as_tensor(timestep, device=sample.device).flatten()
        if self._begin_index is None:
            indices = [self.index_for_timestep(t, self.timesteps.to(sample.device)) for t in timestep]
        elif self._step_index is not None:
            indices = [self._step_index] * timestep.shape[0]
        else:
            indices = [self._begin_index] * timestep.shape[0]
        sigma = sigmas[indices].flatten()
        while sigma.dim() < sample.dim():
            sigma = sigma.unsqueeze(-1)
        return sigma * noise + (1.0 - sigma) * sample

    # -- the grid ----------------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None) -> None:
        """The grid of the core's :class:`~bdia.FlowMatchSchedule` for this config, ``mu`` and custom ``sigmas`` (or
        ``timesteps``, read as ``sigma * num_train_timesteps``)."""
        T = self.config.num_train_timesteps
        if self.config.use_dynamic_shifting and mu is None:
            raise InvalidValueError("mu must be passed when use_dynamic_shifting is set")
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise InvalidValueError("sigmas and timesteps should have the same length")
        given = sigmas if sigmas is not None else None if timesteps is None else np.asarray(timesteps) / T
        if num_inference_steps is None:
            if given is None:
                raise InvalidValueError("pass num_inference_steps, sigmas or timesteps")
            num_inference_steps = len(given)
        elif given is not None and len(given) != num_inference_steps:
            raise InvalidValueError("sigmas and timesteps should have the same length as num_inference_steps")
        base = None if given is None else (lambda n, values=np.asarray(given): values)
        config = {**dict(self.config), "shift": self._shift}
        self._schedule = FlowMatchSchedule.from_diffusers_config(config, mu=mu, base_sigmas=base)
        grid = self._schedule.sigmas(int(num_inference_steps))
        self.num_inference_steps = len(grid)
        self._grid = [float(s) for s in grid] + [0.0]
        self._spacings = {}
        self._reset()
        start = 0
        if self._resume is not None:
            state, self._resume = self._resume, None
            start = self._start_from(state)
        sigma_tensor = torch.from_numpy(grid[start:].copy())
        if timesteps is not None and start == 0:
            self.timesteps = torch.as_tensor(np.asarray(timesteps, dtype=np.float32), device=device)
        else:
            self.timesteps = (sigma_tensor * T).to(device)
        self.sigmas = torch.cat([sigma_tensor, torch.zeros(1)]).to(device)

    def _start_from(self, state: InversionState) -> int:
        full = torch.tensor(self._grid, dtype=torch.float64)
        inverted = state.timesteps.to(torch.float64)
        k = len(full) - len(inverted)
        if state.num_steps != self.num_inference_steps or k < 0 or not torch.equal(full[k:], inverted):
            raise InvalidValueError(f"schedule mismatch: the state was inverted on the sigmas "
                                    f"{[round(float(t), 4) for t in inverted]} ({state.num_steps} steps), this "
                                    f"scheduler's grid is {[round(s, 4) for s in self._grid]}")
        self.check_lattice_of(state, self._lattice(state.dtype))
        self._noisier = (state.latents[0], self._grid[k])
        self._exact = state.latents[1]
        self._begin_index = None
        return k + 1  # the pair covers t_K and t_{K-1}: the pipeline continues at t_{K-1}

    def resume_from(self, state: InversionState, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Continue from an inversion: the next :meth:`set_timesteps` (with the state's step count, ``mu`` and sigmas)
        starts at ``t_{K-1}`` with ``z_K`` as the previous sample; returns the latents to pass to the pipeline, cast
        to ``dtype`` (the scheduler keeps the state's own precision)."""
        self.check_resumable(state)
        self._resume = state
        if dtype is not None and not dtype.is_floating_point:
            raise InvalidTypeError(f"cannot resume {state.dtype} latents as {dtype}")
        return state.latents[1] if dtype is None else state.latents[1].to(dtype)

    # -- the update --------------------------------------------------------------------------------------
    def _lattice(self, dtype: torch.dtype) -> float | None:
        if dtype not in self._spacings:
            self._spacings[dtype] = resolve_lattice(self._options["lattice"], dtype, self._schedule,
                                                    self.num_inference_steps)
        return self._spacings[dtype]

    def _state_of(self, sample: torch.Tensor) -> torch.Tensor:
        """The full-precision state behind ``sample``: the scheduler's own copy when ``sample`` is what it returned,
        else ``sample`` in float32 at least."""
        if self._exact is not None and self._exact.shape == sample.shape and torch.equal(
                self._exact.to(sample.dtype), sample):
            return self._exact
        return sample if torch.finfo(sample.dtype).eps <= torch.finfo(torch.float32).eps else sample.float()

    def _check_step(self, timestep, per_token_timesteps):
        if self.num_inference_steps is None:
            raise InvalidValueError("call set_timesteps(num_inference_steps) before step()")
        if isinstance(timestep, int) or (torch.is_tensor(timestep) and not timestep.is_floating_point()):
            raise InvalidValueError("pass one of scheduler.timesteps as the timestep, not an integer index")
        if per_token_timesteps is not None:
            raise InvalidValueError("per_token_timesteps are not supported: every token of a BDIA state must share "
                                    "its grid")

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | None = None, per_token_timesteps: torch.Tensor | None = None,
             return_dict: bool = True) -> BDIAFlowMatchSchedulerOutput | tuple:
        """One step from ``timestep`` with the velocity ``model_output`` (the stock scheduler's positional order; the
        churn arguments and ``generator`` are accepted and unused, as there)."""
        self._check_step(timestep, per_token_timesteps)
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        sigma, target = float(self.sigmas[i]), float(self.sigmas[i + 1])
        z = self._state_of(sample)
        lattice = self._lattice(z.dtype)
        if lattice is not None:
            z = steps.lattice_round(z, lattice)
        level = self._schedule.level(sigma)
        x0, eps = VELOCITY.convert(model_output.to(z.dtype), z, level)
        j = self._grid.index(sigma)
        continues = self._noisier is not None and j > 0 and self._noisier[1] == self._grid[j - 1]
        if continues:
            z_noisier, noisier = self._noisier[0].to(z), self._schedule.level(self._noisier[1])
            if lattice is not None:
                increment = steps.bdia_increment_from_prediction(x0, eps, noisier, self._schedule.level(target))
                new = z_noisier + steps.lattice_round(increment, lattice)
            else:
                new = steps.bdia_from_prediction(z_noisier, x0, eps, noisier, self._schedule.level(target), self.gamma)
        else:  # the first step of a run, or one after a jump: Euler (= DDIM)
            new = steps.ddim_from_prediction(x0, eps, self._schedule.level(target))
            if lattice is not None:
                new = steps.lattice_round(new, lattice)
        if lattice is not None:
            check_lattice_range(new, lattice, f"at sigma {sigma:.4g}")
        self._noisier, self._exact = (z, sigma), new
        self._step_index = i + 1
        prev_sample = new.to(model_output.dtype)
        return (prev_sample,) if not return_dict else BDIAFlowMatchSchedulerOutput(prev_sample=prev_sample)


class BDIAFlowMatchInverseScheduler(BDIAFlowMatchScheduler):
    """BDIA inversion (data to noise) of a rectified flow for a custom loop; see :class:`BDIAFlowMatchScheduler`::

        inverse = BDIAFlowMatchInverseScheduler.from_config(pipe.scheduler.config)
        inverse.set_timesteps(28, mu=mu)                     # mu as the pipeline computes it, for FLUX
        for t in inverse.timesteps:
            latents = inverse.step(transformer_velocity(latents, t), t, latents).prev_sample
        state = inverse.inversion_state()

    As :class:`~bdia.diffusers.BDIAInverseScheduler` does for DDIM: ``timesteps`` is ``[t_1, t_1, t_2, ...,
    t_{N-1}]`` (times ``num_train_timesteps``); a step that continues the previous one (``t`` is the grid point
    the previous step arrived at) is the exact inverse update, any other is an Euler inversion step to ``t`` from
    the grid point below it, with the velocity evaluated at ``t`` on the cleaner state. ``prev_sample`` keeps the
    state's own precision (float32 at least).
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None) -> None:
        if self.gamma <= 0:
            raise InvalidValueError("inversion needs gamma > 0: the inverse update divides by gamma")
        super().set_timesteps(num_inference_steps, device, sigmas, mu, timesteps)
        N = self.num_inference_steps
        warn_amplified("bdia", self.gamma, N, rounding_amplification("bdia", N, gamma=self.gamma))
        self._up = self._grid[::-1]  # 0 (data), t_1, ..., t_N
        self._at: int | None = None
        self._cleaner: torch.Tensor | None = None
        self._warned_half = False
        T = self.config.num_train_timesteps
        calls = [self._up[1]] + self._up[1:-1]
        self.timesteps = (torch.tensor(calls, dtype=torch.float32) * T).to(device)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | None = None, per_token_timesteps: torch.Tensor | None = None,
             return_dict: bool = True) -> BDIAFlowMatchSchedulerOutput | tuple:
        """One inversion step (see the class docstring)."""
        self._check_step(timestep, per_token_timesteps)
        sigma = float(torch.as_tensor(timestep).flatten()[0]) / self.config.num_train_timesteps
        up = self._up
        at_sigma = [abs(s - sigma) <= 1e-6 * max(sigma, 1e-6) for s in up]
        m = at_sigma.index(True) if any(at_sigma) else None
        if not self._warned_half:
            self._warned_half = warn_half_precision(sample.dtype)
        z = self._state_of(sample)
        lattice = self._lattice(z.dtype)
        if lattice is not None:
            z = steps.lattice_round(z, lattice)
        velocity = model_output.to(z.dtype)
        if m is not None and m == self._at and self._cleaner is not None:  # continues: z_{m+1} from (z_{m-1}, z_m)
            if m + 1 >= len(up):
                raise InvalidValueError(f"all {self.num_inference_steps} inversion steps are done; read "
                                        "inversion_state()")
            x0, eps = VELOCITY.convert(velocity, z, self._schedule.level(up[m]))
            noisier, cleaner = self._schedule.level(up[m + 1]), self._schedule.level(up[m - 1])
            if lattice is not None:
                increment = steps.bdia_increment_from_prediction(x0, eps, noisier, cleaner)
                new = self._cleaner.to(z) - steps.lattice_round(increment, lattice)
            else:
                new = steps.bdia_inverse_from_prediction(self._cleaner.to(z), x0, eps, noisier, cleaner, self.gamma)
            at = m + 1
        else:
            if m is None or m == 0:
                raise InvalidValueError(f"timestep {float(timestep):g} is not a grid point above the data end")
            x0, eps = VELOCITY.convert(velocity, z, self._schedule.level(up[m - 1]))
            new = steps.ddim_from_prediction(x0, eps, self._schedule.level(up[m]))
            if lattice is not None:
                new = steps.lattice_round(new, lattice)
            at = m
        self._cleaner, self._exact, self._at = z, new, at
        self._step_index = (self._step_index or 0) + 1
        return (new,) if not return_dict else BDIAFlowMatchSchedulerOutput(prev_sample=new)

    def inversion_state(self) -> InversionState:
        """The finished inversion as an :class:`bdia.InversionState` for :func:`bdia.sample` on :attr:`schedule`."""
        if self.num_inference_steps is None or self._at != len(self._up) - 1:
            raise InvalidValueError("the inversion is not finished: run step() once for every entry of timesteps")
        grid = torch.tensor(self._grid, dtype=torch.float64)
        levels = torch.tensor([tuple(self._schedule.level(t)) for t in self._grid], dtype=torch.float64)
        options = {"gamma": self.gamma, "lattice": self._lattice(self._exact.dtype)}
        return InversionState("bdia", self.num_inference_steps, options, grid, (self._exact, self._cleaner),
                              levels=levels)
