"""Model conventions and small wrappers.

A *model* is any callable ``model(z, t) -> eps``: a batch of states ``z`` and one timestep ``t``
(a float or a 0-d tensor, in the schedule's units) to the predicted noise, the same shape as ``z``. A
model that predicts something else says so in its ``prediction`` attribute (:mod:`bdia.predictions`).
An EDM *denoiser* is ``denoiser(x, sigma) -> x0_hat`` in EDM space (``alpha = 1``).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .schedules import Schedule

__all__ = ["CountingModel", "RecordingModel", "edm_denoiser_from_eps", "eps_model_from_denoiser"]

EpsModel = Callable[[Tensor, float], Tensor]
Denoiser = Callable[[Tensor, float], Tensor]


class CountingModel:
    """Wraps a model and counts its network evaluations in ``.calls`` (one per batch call)."""

    def __init__(self, model: EpsModel):
        self.model = model
        self.calls = 0

    @property
    def prediction(self):
        """The wrapped model's :class:`~bdia.predictions.PredictionConfig` (None for a plain eps model)."""
        return getattr(self.model, "prediction", None)

    def __call__(self, z: Tensor, t) -> Tensor:
        self.calls += 1
        return self.model(z, t)

    def __getattr__(self, name):
        """The wrapped model's other attributes; a guided model's branches (``conditional``, ``unconditional``,
        ``guided``: null-text and negative-prompt inversion) are counted as one call each."""
        if name == "model":
            raise AttributeError(name)
        attr = getattr(self.model, name)
        if name not in ("conditional", "unconditional", "guided"):
            return attr

        def counted(*args, **kwargs):
            self.calls += 1
            return attr(*args, **kwargs)

        return counted

    def reset(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, calls={self.calls})"


class RecordingModel(CountingModel):
    """A :class:`CountingModel` that also keeps a copy of every input: ``inputs[k] = (t, z)`` of call ``k``.

    Used to check what exactness needs from the network: that reconstruction evaluates it on the same
    input bits as inversion (:func:`bdia.experiments.compare_network_inputs`). Memory grows with the calls.
    """

    def __init__(self, model: EpsModel):
        super().__init__(model)
        self.inputs: list[tuple[float, Tensor]] = []

    def __call__(self, z: Tensor, t) -> Tensor:
        self.inputs.append((float(t), z.detach().clone()))
        return super().__call__(z, t)

    def reset(self) -> None:
        super().reset()
        self.inputs = []


def edm_denoiser_from_eps(eps_model: EpsModel, schedule: Schedule) -> Denoiser:
    """EDM denoiser ``D(x, s) = x - s * eps(alpha_t x, t)`` of an eps-model, with ``t`` such that ``sigma_t/alpha_t = s``."""

    def denoiser(x: Tensor, edm_sigma) -> Tensor:
        t = float(schedule.timestep_for_edm_sigma(float(edm_sigma)))
        alpha = float(schedule.alpha(t))
        return x - float(edm_sigma) * eps_model(alpha * x, t)

    return denoiser


def eps_model_from_denoiser(denoiser: Denoiser, schedule: Schedule) -> EpsModel:
    """Eps-model ``eps(z, t) = (x - D(x, s)) / s`` of an EDM denoiser, with ``x = z / alpha_t`` and ``s = sigma_t / alpha_t``."""

    def eps_model(z: Tensor, t) -> Tensor:
        lvl = schedule.level(t)
        x = z / lvl.alpha
        return (x - denoiser(x, lvl.edm_sigma)) / lvl.edm_sigma

    return eps_model
