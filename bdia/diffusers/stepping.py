"""What bdia's diffusers schedulers share: diffusers' step-index contract (``step_index``, ``begin_index``,
``set_begin_index``, ``index_for_timestep``, ``len``) and the checks that an inversion state can be resumed."""

from __future__ import annotations

import torch

from ..errors import InvalidValueError
from ..samplers import InversionState

__all__ = ["SchedulerStepping"]


class SchedulerStepping:
    """A mixin for a scheduler with ``timesteps``, ``config.num_train_timesteps``, ``gamma``, and ``_step_index`` and
    ``_begin_index`` attributes, as diffusers' schedulers keep them."""

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

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Index of ``timestep`` in ``schedule_timesteps`` (default: ``timesteps``); ``ValueError`` if absent (the
        second match where a timestep repeats, as diffusers takes it)."""
        schedule = (self.timesteps if schedule_timesteps is None else schedule_timesteps).cpu()
        # a float grid (flow sigmas times 1000) is matched in its own precision, an integer grid exactly
        query = torch.as_tensor(float(timestep), dtype=schedule.dtype) if schedule.is_floating_point() else \
            float(timestep)
        matches = (schedule == query).nonzero()
        if len(matches) == 0:
            raise InvalidValueError(f"timestep {float(timestep):g} is not in the schedule {schedule.tolist()}")
        return int(matches[1 if len(matches) > 1 else 0])

    def _init_step_index(self, timestep) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def check_resumable(self, state: InversionState) -> None:
        """That ``state`` is a BDIA inversion made with this scheduler's gamma."""
        name = type(self).__name__
        if state.method != "bdia":
            raise InvalidValueError(f"{name} resumes 'bdia' inversions only, this state was made by {state.method!r}")
        if state.options.get("gamma") != self.gamma:
            raise InvalidValueError(f"option mismatch: the state was inverted with gamma={state.options.get('gamma')}, "
                                    f"this scheduler has gamma={self.gamma}")

    def check_lattice_of(self, state: InversionState, lattice: float | None) -> None:
        """That ``state`` was inverted on the lattice this scheduler resolves its option to (``lattice``)."""
        if state.options.get("lattice") != lattice:
            raise InvalidValueError(f"option mismatch: the state was inverted with lattice="
                                    f"{state.options.get('lattice')!r}, this scheduler has "
                                    f"lattice={self.config.lattice!r}")
