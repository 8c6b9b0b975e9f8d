"""BDIA-DDIM as a diffusers scheduler.

    pipe.scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=0.5)
    image = pipe("a photo of a cat", num_inference_steps=10).images[0]

The scheduler keeps the previous sample between calls of :meth:`BDIAScheduler.step`: its first step
is a DDIM step, every later one the BDIA update (paper eq. 29) with the state it returned two
steps earlier. Its noise levels and timestep grid are those of :class:`bdia.VPSchedule`, built from
the same config, so a pipeline run equals ``bdia.sample(..., method="bdia")`` on the same network.
:meth:`BDIAScheduler.resume_from` continues from an :class:`bdia.InversionState`, so a standard
pipeline can reconstruct or edit an inverted image exactly. :class:`BDIAInverseScheduler` runs the
inversion itself in a custom loop, like diffusers' ``DDIMInverseScheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput

from .. import steps
import warnings

from ..samplers import AMPLIFICATION_WARN, ExactnessWarning, InversionState, _check_gamma, _levels_tensor, \
    rounding_amplification
from ..schedules import VPSchedule

__all__ = ["BDIAScheduler", "BDIAInverseScheduler", "BDIASchedulerOutput"]


@dataclass
class BDIASchedulerOutput(BaseOutput):
    """``prev_sample``: the state at the next timestep; ``pred_original_sample``: the x0 prediction there."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class BDIAScheduler(SchedulerMixin, ConfigMixin):
    """Bi-directional integration approximation (BDIA-DDIM) for diffusers pipelines.

    Accepts every key of a ``DDIMScheduler`` config (``from_config`` of an existing DDIM config works);
    ``gamma`` in [0, 1] is BDIA's mixing weight (0 gives DDIM, 1 the paper's eq. 26). Options BDIA does
    not support (thresholding, zero-SNR rescaling, x0 prediction, clipping) are refused, not ignored.
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
        clip_sample: bool = False,
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
    ):
        _check_gamma(gamma)
        if thresholding or rescale_betas_zero_snr or clip_sample:
            raise ValueError("BDIAScheduler does not support thresholding, clip_sample or rescale_betas_zero_snr: they "
                             "would break the exact invertibility of the update; set them to False")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.schedule = VPSchedule.from_diffusers_config(self.config)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy().astype(np.int64))
        self._grid: list[float] = []
        self._resume: InversionState | None = None
        self._reset()

    def _reset(self) -> None:
        self._step_index = 0
        self._prev_sample: torch.Tensor | None = None

    @property
    def gamma(self) -> float:
        return float(self.config.gamma)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def resume_from(self, state: InversionState) -> None:
        """Continue from an inversion: the next :meth:`set_timesteps` with the state's step count starts at
        ``t_{K-1}`` with ``z_K`` as the previous sample. Call the pipeline with ``latents=state.latents[1]``."""
        if state.method != "bdia":
            raise ValueError(f"BDIAScheduler resumes 'bdia' inversions only, this state was made by {state.method!r}")
        if state.options.get("gamma") != self.gamma:
            raise ValueError(f"option mismatch: the state was inverted with gamma={state.options.get('gamma')}, this "
                             f"scheduler has gamma={self.gamma}")
        self._resume = state

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        grid = self.schedule.timesteps(num_inference_steps)
        self._reset()
        start = 0
        if self._resume is not None:
            state, self._resume = self._resume, None
            if state.num_steps != num_inference_steps:
                raise ValueError(f"step count mismatch: the state was inverted with num_steps={state.num_steps}, the "
                                 f"pipeline asked for {num_inference_steps}")
            start = len(grid) - len(state.timesteps) + 1  # skip t_K: the pair already covers it
            if not torch.equal(grid[start - 1:], state.timesteps):
                raise ValueError("schedule mismatch: the state's timesteps differ from this scheduler's grid")
            self._prev_sample = state.latents[0]
            self._step_index = start
        self._grid = grid.tolist()
        self.num_inference_steps = num_inference_steps
        calls = grid[start:-1]
        integral = bool(torch.all(calls == calls.round()))
        self.timesteps = (calls.long() if integral else calls.float()).to(device)

    def _level(self, index: int):
        return self.schedule.level(self._grid[index])

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True,
             **kwargs) -> BDIASchedulerOutput | tuple:
        """One BDIA step from ``timestep`` (the next one on the grid) to the following grid point."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        j = self._step_index
        if j >= len(self._grid) - 1:
            raise ValueError(f"all {self.num_inference_steps} steps are done; call set_timesteps again to start over")
        t = float(timestep.item() if torch.is_tensor(timestep) else timestep)
        if abs(t - self._grid[j]) > 1e-4:
            raise ValueError(f"step() got timestep {t:g}, the scheduler expected {self._grid[j]:g} (step {j})")
        eps = model_output.to(sample.dtype)
        cur, nxt = self._level(j), self._level(j + 1)
        if self.config.prediction_type == "v_prediction":
            eps = cur.alpha * eps + cur.sigma * sample
        if j == 0 or self._prev_sample is None:
            prev_sample = steps.ddim_step(sample, eps, cur, nxt)
        else:
            prev_sample = steps.bdia_step(self._prev_sample.to(sample), sample, eps, self._level(j - 1), cur, nxt,
                                          self.gamma)
        self._prev_sample = sample
        self._step_index = j + 1
        x0 = (sample - cur.sigma * eps) / cur.alpha
        if not return_dict:
            return (prev_sample, x0)
        return BDIASchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class BDIAInverseScheduler(BDIAScheduler):
    """BDIA inversion (data to noise) for a custom diffusers loop; its result feeds :meth:`BDIAScheduler.resume_from`.

        inverse = BDIAInverseScheduler.from_config(pipe.scheduler.config, gamma=0.96)
        inverse.set_timesteps(50)
        for t in inverse.timesteps:
            latents = inverse.step(eps_model(latents, t), t, latents).prev_sample
        state = inverse.inversion_state()

    The first step is one DDIM inversion step from the data (the network at ``t_1``, paper eq. 10); it
    only seeds the pair. Every later step is the exact inverse update with the network at the current
    state, so ``timesteps`` is ``[t_1, t_1, t_2, ..., t_{N-1}]``: ``N`` network calls in all, as in
    :func:`bdia.invert`. ``gamma`` must be positive.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if self.gamma <= 0:
            raise ValueError("inversion needs gamma > 0: the inverse update divides by gamma")
        amp = rounding_amplification("bdia", num_inference_steps, gamma=self.gamma)
        if amp > AMPLIFICATION_WARN:
            warnings.warn(f"BDIA inversion with gamma={self.gamma} over {num_inference_steps} steps amplifies rounding "
                          f"errors by about (1/gamma)^(N-1) = {amp:.3g}", ExactnessWarning, stacklevel=2)
        grid = self.schedule.timesteps(num_inference_steps)
        self._reset()
        self._descending = grid
        self._grid = grid.flip(0).tolist()  # t_0 (data) ... t_N
        self._last: torch.Tensor | None = None
        self.num_inference_steps = num_inference_steps
        calls = torch.cat([grid.flip(0)[1:2], grid.flip(0)[1:-1]])
        integral = bool(torch.all(calls == calls.round()))
        self.timesteps = (calls.long() if integral else calls.float()).to(device)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True,
             **kwargs) -> BDIASchedulerOutput | tuple:
        """One inversion step: ``z_1`` from the data on the first call, then ``z_{m+1}`` from ``(z_{m-1}, z_m)``."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        m = self._step_index
        if m >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} inversion steps are done; read inversion_state()")
        t = float(timestep.item() if torch.is_tensor(timestep) else timestep)
        expected = float(self.timesteps[m])
        if abs(t - expected) > 1e-4:
            raise ValueError(f"step() got timestep {t:g}, the inverse scheduler expected {expected:g} (step {m})")
        eps = model_output.to(sample.dtype)
        level = self.schedule.level
        if self.config.prediction_type == "v_prediction":
            lvl = level(t)
            eps = lvl.alpha * eps + lvl.sigma * sample
        if m == 0:
            new = steps.ddim_inversion_step(sample, eps, level(self._grid[0]), level(self._grid[1]))
        else:
            new = steps.bdia_inverse_step(self._prev_sample.to(sample), sample, eps, level(self._grid[m + 1]),
                                          level(self._grid[m]), level(self._grid[m - 1]), self.gamma)
        self._prev_sample, self._last = sample, new
        self._step_index = m + 1
        if not return_dict:
            return (new, None)
        return BDIASchedulerOutput(prev_sample=new)

    def inversion_state(self) -> InversionState:
        """The finished inversion as an :class:`bdia.InversionState`: the pair ``(z_N, z_{N-1})``."""
        if self.num_inference_steps is None or self._step_index != self.num_inference_steps:
            raise ValueError("the inversion is not finished: run step() once for every entry of timesteps")
        return InversionState("bdia", self.num_inference_steps, {"gamma": self.gamma}, self._descending,
                              (self._last, self._prev_sample), levels=_levels_tensor(self.schedule, self._descending))
