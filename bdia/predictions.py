"""What a network predicts, and the pair ``(x0_hat, eps_hat)`` every DDIM-family update is written on.

DDIM's update (paper eq. 6) reads ``z_t = alpha_t x0_hat + sigma_t eps_hat`` with the two predictions made
from ``z_s``. A network may predict either of them, or a combination: :class:`PredictionConfig` says which
(``prediction_type``, diffusers' names) and how ``x0_hat`` is clipped or thresholded, and
:meth:`PredictionConfig.convert` turns the network's output into the :class:`Prediction` pair:

============================  ==========================================  ==========================================
``prediction_type``           ``x0_hat``                                  ``eps_hat``
============================  ==========================================  ==========================================
``epsilon``                   ``(z - sigma out) / alpha``                 ``out``
``v_prediction``              ``alpha z - sigma out``                     ``alpha out + sigma z``
``sample``                    ``out``                                     ``(z - alpha out) / sigma``
``velocity``                  ``(z - sigma out) / (alpha + sigma)``       ``x0_hat + out``
============================  ==========================================  ==========================================

(``v = alpha eps - sigma x`` on a variance-preserving schedule; the velocity ``eps - x`` is ``dz/dt`` on a
rectified flow's linear path, :mod:`bdia.flow`, and stays defined where ``alpha = 0``.) Clipping and thresholding change
``x0_hat`` only, a function of ``z_i`` alone, so every two-step update stays linear in the carried state
and exactly invertible.

A model is any callable ``model(z, t)``; its ``prediction`` attribute (a :class:`PredictionConfig`) says
what it returns, and a plain callable returns eps (:data:`EPSILON`). :func:`with_prediction` attaches a
config to any callable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import InvalidTypeError, InvalidValueError
from .schedules import Level
from .steps import x0_prediction

__all__ = ["PREDICTION_TYPES", "Prediction", "DynamicThresholding", "PredictionConfig", "EPSILON", "VELOCITY",
           "prediction_config", "with_prediction", "PredictionModel", "dynamic_threshold"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "velocity")


class Prediction(NamedTuple):
    """``(x0_hat, eps_hat)``: the clean-data and noise predictions made from one state (paper eq. 6)."""

    x0: Tensor
    eps: Tensor


@dataclass(frozen=True)
class DynamicThresholding:
    """Imagen's dynamic thresholding of ``x0_hat`` (Saharia et al. 2022), as diffusers' DDIM applies it: per sample,
    ``s`` is the ``ratio`` quantile of ``|x0_hat|``, clamped to ``[1, max_value]`` (``max_value`` where it is below
    1, as ``torch.clamp`` does), and ``x0_hat`` becomes ``clamp(x0_hat, -s, s) / s``."""

    ratio: float = 0.995
    max_value: float = 1.0

    def __post_init__(self):
        if not 0.0 < float(self.ratio) <= 1.0:
            raise InvalidValueError(f"the thresholding ratio must be in (0, 1], got {self.ratio}")
        if not float(self.max_value) > 0.0:
            raise InvalidValueError(f"the thresholding max_value must be positive, got {self.max_value}")


def dynamic_threshold(x0: Tensor, thresholding: DynamicThresholding) -> Tensor:
    """:class:`DynamicThresholding` applied to a batch ``x0`` (the quantile in float32 for half-precision input)."""
    dtype, shape = x0.dtype, x0.shape
    flat = x0.reshape(shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # torch.quantile needs float32 or float64
    scale = torch.quantile(flat.abs(), thresholding.ratio, dim=1)
    scale = torch.clamp(scale, min=1, max=thresholding.max_value).unsqueeze(1)
    return (torch.clamp(flat, -scale, scale) / scale).reshape(shape).to(dtype)


@dataclass(frozen=True)
class PredictionConfig:
    """What a network's output is (``prediction_type``) and how ``x0_hat`` is limited: ``clip_range`` clamps it to
    ``[-clip_range, clip_range]``, ``thresholding`` (which takes precedence, as in diffusers) rescales it.
    ``clipped_eps`` recomputes ``eps_hat`` from the limited ``x0_hat`` (diffusers' ``use_clipped_model_output``)."""

    prediction_type: str = "epsilon"
    clip_range: float | None = None
    thresholding: DynamicThresholding | None = None
    clipped_eps: bool = False

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise InvalidValueError(f"prediction_type must be one of {', '.join(map(repr, PREDICTION_TYPES))}, got "
                                    f"{self.prediction_type!r}")
        if self.clip_range is not None and not float(self.clip_range) > 0:
            raise InvalidValueError(f"clip_range must be positive, got {self.clip_range}")
        if self.thresholding is not None and not isinstance(self.thresholding, DynamicThresholding):
            raise InvalidTypeError(f"thresholding must be a DynamicThresholding, got {type(self.thresholding).__name__}")

    @classmethod
    def from_scheduler_config(cls, config) -> "PredictionConfig":
        """The config a diffusers scheduler config describes (``prediction_type``, ``clip_sample`` with
        ``clip_sample_range``, ``thresholding`` with ``dynamic_thresholding_ratio`` and ``sample_max_value``)."""
        cfg = dict(config)
        thresholding = None
        if cfg.get("thresholding"):
            thresholding = DynamicThresholding(float(cfg.get("dynamic_thresholding_ratio", 0.995)),
                                               float(cfg.get("sample_max_value", 1.0)))
        clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample") else None
        return cls(cfg.get("prediction_type", "epsilon"), clip, thresholding)

    @property
    def limits_x0(self) -> bool:
        """Whether ``x0_hat`` is clipped or thresholded."""
        return self.clip_range is not None or self.thresholding is not None

    def convert(self, output: Tensor, z: Tensor, level: Level, network_level: Level | None = None,
                clipped_eps: bool | None = None) -> Prediction:
        """The :class:`Prediction` at state ``z`` (noise level ``level``) from the network's ``output``.

        ``network_level``: where the network was evaluated, when that differs from the state's level (the seed
        step of an inversion, eq. 10); a ``sample`` prediction's eps is formed there when the state's
        ``sigma`` is 0 (the data end). ``clipped_eps`` overrides the config's.
        """
        kind = self.prediction_type
        if kind == "sample" and network_level is not None and level.sigma == 0:
            level = network_level
        if kind == "epsilon":
            if level.alpha == 0:
                raise InvalidValueError(
                    "an eps prediction at alpha = 0 (zero terminal SNR, or a flow's t = 1) does not determine x0: "
                    "give the model's own prediction type (bdia.with_prediction(model, 'v_prediction'), or "
                    "bdia.from_velocity for flow models), or start the grid below that timestep")
            x0, eps = x0_prediction(z, output, level), output
        elif kind == "v_prediction":
            x0 = level.alpha * z - level.sigma * output
            eps = level.alpha * output + level.sigma * z
        elif kind == "velocity":
            x0 = (z - level.sigma * output) / (level.alpha + level.sigma)
            eps = x0 + output
        else:  # "sample"
            x0, eps = output, (z - level.alpha * output) / level.sigma
        if self.thresholding is not None:
            x0 = dynamic_threshold(x0, self.thresholding)
        elif self.clip_range is not None:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        recompute = self.clipped_eps if clipped_eps is None else clipped_eps
        if recompute and self.limits_x0:
            eps = (z - level.alpha * x0) / level.sigma
        return Prediction(x0, eps)


#: what a plain callable returns: eps, unlimited
EPSILON = PredictionConfig()
#: a rectified flow's velocity ``v = eps - x`` (dz/dt on the linear path)
VELOCITY = PredictionConfig("velocity")


def prediction_config(model) -> PredictionConfig:
    """The :class:`PredictionConfig` of ``model``: its ``prediction`` attribute, else :data:`EPSILON`."""
    config = getattr(model, "prediction", None)
    if config is None:
        return EPSILON
    if not isinstance(config, PredictionConfig):
        raise InvalidTypeError(f"the model's prediction attribute must be a bdia PredictionConfig, got "
                               f"{type(config).__name__}")
    return config


class PredictionModel:
    """``model`` with a :class:`PredictionConfig` attached (see :func:`with_prediction`)."""

    def __init__(self, model, prediction: PredictionConfig):
        self.model, self.prediction = model, prediction

    def __call__(self, z: Tensor, t) -> Tensor:
        return self.model(z, t)

    def __repr__(self) -> str:
        return f"PredictionModel({self.model!r}, {self.prediction})"


def with_prediction(model, prediction_type: str = "epsilon", clip_range: float | None = None,
                    thresholding: DynamicThresholding | None = None, clipped_eps: bool = False) -> PredictionModel:
    """``model`` declared to return ``prediction_type`` (``"epsilon"``, ``"v_prediction"``, ``"sample"``,
    ``"velocity"``), with
    ``x0_hat`` clipped to ``clip_range`` or thresholded; the samplers convert its output (see the module)."""
    return PredictionModel(model, PredictionConfig(prediction_type, clip_range, thresholding, clipped_eps))
