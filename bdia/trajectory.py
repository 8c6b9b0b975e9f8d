"""The bookkeeping of one run along a grid, shared by every method's loops (:mod:`bdia.methods`).

A :class:`Trajectory` holds the timesteps and noise levels of the walk, calls the network and turns its
output into the :class:`~bdia.predictions.Prediction` pair (checking shape and dtype), and records each
finished step: non-finite values, the lattice's exact range, the growth of the states over their noise
level, the progress bar, the user's callback and, on request, every state.

Grid indices follow the walk: when sampling, ``j = 0`` is the noisiest point ``t_K`` and ``j = K`` the
data end; when inverting, ``j = 0`` is the data end and ``j = K`` the noisiest point.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import InvalidTypeError, InvalidValueError, NonFiniteError
from .exactness import warn_lower_precision_output
from .lattice import check_lattice_range
from .predictions import Prediction, prediction_config
from .steps import lattice_round

__all__ = ["Trajectory", "rms", "expected_rms"]


def rms(z: Tensor) -> float:
    """The root mean square of ``z``, in float64."""
    return float(z.double().pow(2).mean().sqrt())


def expected_rms(level, data_rms: float) -> float:
    """The rms of ``alpha x + sigma eps`` for data of rms ``data_rms`` and standard normal ``eps``."""
    return math.sqrt((level.alpha * data_rms) ** 2 + level.sigma**2)


class Trajectory:
    """One walk of ``method`` over the timesteps ``ts`` (in walking order) of ``schedule``; see the module.

    ``lattice``: the spacing every state is kept on (None without). ``data_rms``: when given, the growth of
    the states over the noise level expected for data of that rms is tracked in :attr:`peak_ratio`. ``label``:
    what the progress bar calls the method (default its name).
    """

    def __init__(self, model, method: str, direction: str, ts: Tensor, schedule, *, progress: bool = False,
                 callback: Callable | None = None, keep_states: bool = False, lattice: float | None = None,
                 data_rms: float | None = None, label: str | None = None):
        self.model, self.method, self.direction = model, method, direction
        self.prediction = prediction_config(model)
        self.schedule = schedule
        self.ts = [float(t) for t in ts]
        self.levels = [schedule.level(t) for t in self.ts]
        #: the variables in which DDIM is Euler, for rules built on step sizes (O-BELM)
        self.euler_variables = schedule.euler_variables
        self.callback = callback
        self.states: list[Tensor] | None = [] if keep_states else None
        self.bar = tqdm(total=len(self.ts) - 1, desc=f"{label or method} {direction}", disable=not progress, leave=False)
        self.lattice = lattice
        self.data_rms = data_rms
        self.peak_ratio = 0.0
        self.warned_dtype = False
        #: what a loop hands the inversion state beyond its latents (null-text's embeddings), or reads from it
        self.extras: dict = {}
        self.forward_passes = 0  # counted by the guided-model calls (null-text, negative-prompt)

    # -- the network ------------------------------------------------------------------------------------
    def output(self, z: Tensor, j: int) -> Tensor:
        """The network's output at ``(z, t_j)``, checked and in the dtype of ``z``."""
        return self.output_at(z, self.ts[j])

    def output_at(self, z: Tensor, t: float) -> Tensor:
        """The network's output at ``(z, t)`` for any timestep ``t`` of the schedule (a midpoint, say)."""
        return self._checked(lambda: self.model(z, t), z)

    # -- guided models whose unconditional embedding can be replaced (null-text, negative-prompt inversion) ----
    def conditional(self, z: Tensor, j: int) -> Tensor:
        """The conditional branch alone at ``(z, t_j)`` (guidance 1): one network pass."""
        self.forward_passes += 1
        return self._checked(lambda: self.model.conditional(z, self.ts[j]), z)

    def unconditional(self, z: Tensor, j: int, null_embedding: Tensor) -> Tensor:
        """The unconditional branch at ``(z, t_j)`` with ``null_embedding`` (differentiable in it): one pass."""
        self.forward_passes += 1
        return self._checked(lambda: self.model.unconditional(z, self.ts[j], null_embedding), z)

    def guided(self, z: Tensor, j: int, null_embedding: Tensor) -> Tensor:
        """Classifier-free guidance at ``(z, t_j)`` against ``null_embedding``: one batched call (two passes)."""
        self.forward_passes += 2
        return self._checked(lambda: self.model.guided(z, self.ts[j], null_embedding), z)

    def _checked(self, evaluate, z: Tensor) -> Tensor:
        try:
            out = evaluate()
        except RuntimeError as error:
            if "dtype" in str(error) or "Half" in str(error) or "Double" in str(error):
                raise InvalidTypeError(
                    f"the model failed on {z.dtype} states ({str(error).splitlines()[0]}): its parameters have "
                    "another dtype. Cast at the model's boundary, e.g. lambda z, t: net(z.to(net_dtype), t).to(z.dtype), "
                    "or use bdia.diffusers.UNetEpsModel, which runs the network in its own dtype") from error
            raise
        if not torch.is_tensor(out) or out.shape != z.shape:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise InvalidValueError(f"the model returned {got} for a state of shape {tuple(z.shape)}; a model must "
                                    "return eps with the shape of its input")
        if not out.is_floating_point():
            raise InvalidTypeError(f"the model returned {out.dtype} values; eps must be a floating-point tensor")
        if out.dtype != z.dtype:
            if not self.warned_dtype:
                self.warned_dtype = warn_lower_precision_output(out.dtype, z.dtype, stacklevel=5)
            out = out.to(z.dtype)
        return out

    def read(self, output: Tensor, z: Tensor, j: int, network_j: int | None = None) -> Prediction:
        """The prediction at state ``z`` (at ``t_j``) from a network ``output`` evaluated at ``t_{network_j}``
        (default ``t_j``; EDICT reads one sequence's output at the other's state)."""
        network_level = None if network_j is None or network_j == j else self.levels[network_j]
        return self.prediction.convert(output, z, self.levels[j], network_level)

    def predict(self, z: Tensor, j: int) -> Prediction:
        """The prediction ``(x0_hat, eps_hat)`` at ``(z, t_j)``: one network call."""
        return self.read(self.output(z, j), z, j)

    def eps(self, z: Tensor, j: int) -> Tensor:
        """The noise prediction at ``(z, t_j)``: one network call (the EDM samplers integrate eps)."""
        return self.predict(z, j).eps

    # -- the states -------------------------------------------------------------------------------------
    def on_lattice(self, z: Tensor) -> Tensor:
        """``z`` rounded onto the run's lattice (unchanged without one)."""
        return z if self.lattice is None else lattice_round(z, self.lattice)

    def start(self, z: Tensor) -> None:
        """Record a state the run starts from (one per grid point it covers)."""
        if self.states is not None:
            self.states.append(z)
        self._track(z, 0)

    def _track(self, z: Tensor, j: int) -> None:
        if self.data_rms is not None:
            self.peak_ratio = max(self.peak_ratio, rms(z) / expected_rms(self.levels[j], self.data_rms))

    def done(self, step: int, j: int, *states: Tensor) -> None:
        """Record that step number ``step`` produced ``states`` at grid point ``j``."""
        for z in states:
            if not torch.isfinite(z).all():
                raise NonFiniteError(
                    f"non-finite values (nan/inf) first appeared at step {step + 1} of {len(self.ts) - 1} of "
                    f"{self.method!r} {self.direction} (t = {self.ts[j]:.6g}); check the model's output and the "
                    "schedule there")
            if self.lattice is not None:
                check_lattice_range(z, self.lattice,
                                    f"at step {step + 1} of {self.method!r} {self.direction} (t = {self.ts[j]:.6g})")
            self._track(z, j)
        if self.states is not None:
            self.states.append(states[0])
        if self.callback is not None:
            self.callback(step, self.ts[j], states[0])
        self.bar.update(1)

    def __enter__(self) -> "Trajectory":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
