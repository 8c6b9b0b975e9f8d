"""Measurements shared by the book's chapters, the benchmark and the command line.

A :class:`MethodSpec` names a method with its options (``"bdia:gamma=0.96"``); :func:`round_trip`
inverts and reconstructs once and reports the error and the network calls of each half.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .models import CountingModel
from .samplers import METHODS, _resolve, invert, method_defaults, sample

__all__ = ["MethodSpec", "RoundTrip", "round_trip", "relative_error", "parse_methods", "label_key"]


@dataclass(frozen=True)
class MethodSpec:
    """A method and its options, e.g. ``MethodSpec("bdia", {"gamma": 0.96})``; see :meth:`parse`."""

    method: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        unknown = set(self.options) - set(method_defaults(self.method))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} for {self.method!r}; allowed: "
                             f"{', '.join(sorted(method_defaults(self.method))) or 'none'}")
        _resolve(self.method, self.options, inverting=False)  # values: gamma in [0, 1], p in (0, 1]

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        """``"bdia"``, ``"bdia:gamma=0.5"``, ``"edict:p=0.9,leapfrog=false"``."""
        name, _, rest = text.strip().partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"option {item!r} in {text!r} is not of the form key=value")
            value = value.strip()
            options[key.strip()] = value.lower() == "true" if value.lower() in ("true", "false") else float(value)
        return cls(name.strip(), options)

    @property
    def label(self) -> str:
        """A short human label: ``bdia (γ=0.96)``."""
        if not self.options:
            return self.method
        names = {"gamma": "γ", "p": "p", "leapfrog": "leapfrog"}
        return f"{self.method} (" + ", ".join(f"{names.get(k, k)}={v:g}" if isinstance(v, float) else f"{names.get(k, k)}={v}"
                                              for k, v in self.options.items()) + ")"

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method}:{opts}" if opts else self.method


def label_key(label: str) -> str:
    """A name-safe key for a :attr:`MethodSpec.label`: ``"bdia (γ=0.96)"`` -> ``"bdia_096"`` (for glue keys)."""
    return label.replace(" (γ=", "_").replace(")", "").replace(".", "")


def parse_methods(texts) -> list[MethodSpec]:
    """A list of :class:`MethodSpec` from strings (or a space/semicolon separated string)."""
    if isinstance(texts, str):
        texts = texts.replace(";", " ").split()
    return [t if isinstance(t, MethodSpec) else MethodSpec.parse(t) for t in texts]


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` over the whole batch, computed in float64."""
    reference = reference.double()
    return ((estimate.double() - reference).norm() / reference.norm()).item()


@dataclass
class RoundTrip:
    """One inversion followed by reconstruction."""

    spec: MethodSpec
    num_steps: int
    error: float
    invert_calls: int
    reconstruct_calls: int
    invert_seconds: float
    reconstruct_seconds: float
    reconstruction: Tensor
    state: object

    @property
    def calls(self) -> int:
        return self.invert_calls + self.reconstruct_calls


def _synchronize(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def round_trip(model, x0: Tensor, schedule, num_steps: int, spec: MethodSpec | str, **run_options) -> RoundTrip:
    """Invert ``x0``, reconstruct it, and measure error, network calls and wall time of each half."""
    spec = MethodSpec.parse(spec) if isinstance(spec, str) else spec
    counting = model if isinstance(model, CountingModel) else CountingModel(model)
    counting.reset()
    _synchronize(x0)
    start = time.perf_counter()
    strength = run_options.pop("strength", 1.0)
    state = invert(counting, x0, schedule, num_steps, spec.method, strength=strength, **spec.options, **run_options)
    _synchronize(x0)
    mid = time.perf_counter()
    invert_calls, counting.calls = counting.calls, 0
    rec = sample(counting, state, schedule, num_steps, spec.method, **run_options)
    _synchronize(x0)
    end = time.perf_counter()
    return RoundTrip(spec, num_steps, relative_error(rec, x0), invert_calls, counting.calls, mid - start, end - mid,
                     rec, state)
