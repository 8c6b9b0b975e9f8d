"""Measurements shared by the book's chapters, the benchmark and the command line.

A :class:`MethodSpec` names a method with its options (``"bdia:gamma=0.96"``); :func:`round_trip`
inverts and reconstructs once and reports the error and the network calls of each half;
:func:`compare_network_inputs` checks whether reconstruction fed the network the same input bits as
inversion did, which is what exactness needs from a network that runs in lower precision than the
latents.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .models import CountingModel, RecordingModel
from .steps import lattice_round
from .samplers import METHODS, _resolve, invert, method_defaults, sample

__all__ = ["MethodSpec", "RoundTrip", "round_trip", "relative_error", "parse_methods", "label_key",
           "InputComparison", "compare_network_inputs", "join_names"]


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


def join_names(items, empty: str = "none") -> str:
    """``"a, b and c"`` (for sentences the book computes from its numbers); ``empty`` for no items."""
    items = [str(i) for i in items]
    if not items:
        return empty
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def label_key(label: str) -> str:
    """A name-safe key for a :attr:`MethodSpec.label`: ``"bdia (γ=0.96)"`` -> ``"bdia_096"``,
    ``"bdia (γ=1, lattice=True)"`` -> ``"bdia_1_lattice"`` (for glue keys)."""
    key = label.replace(" (γ=", "_").replace(", lattice=True", "_lattice").replace(")", "").replace(".", "")
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def parse_methods(texts) -> list[MethodSpec]:
    """A list of :class:`MethodSpec` from strings (or a space/semicolon separated string)."""
    if isinstance(texts, str):
        texts = texts.replace(";", " ").split()
    return [t if isinstance(t, MethodSpec) else MethodSpec.parse(t) for t in texts]


def relative_error(estimate: Tensor, reference: Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` over the whole batch, computed in float64."""
    reference = reference.double()
    return ((estimate.double() - reference).norm() / reference.norm()).item()


@dataclass(frozen=True)
class InputComparison:
    """The network inputs of a reconstruction against those of its inversion, as the network sees them.

    Each reconstruction call is paired with the inversion call at the same timestep whose input is
    nearest. ``flips`` counts the input elements whose values in ``dtype`` (the network's precision)
    differ between the two; ``expected_flips`` is ``sum(min(1, |dz| / ulp(z)))`` over all elements, the
    number of flips to expect when the float64 discrepancy ``dz`` falls at a random place between two
    values of ``dtype``; ``max_ulps`` is the largest ``|dz| / ulp(z)``. ``flipped_calls`` lists
    ``(reconstruction call, t, flips)`` for every call with at least one flip.
    """

    dtype: torch.dtype
    calls: int
    elements: int
    flips: int
    expected_flips: float
    max_ulps: float
    flipped_calls: tuple = ()


def _ulp(values: Tensor, dtype: torch.dtype) -> Tensor:
    """Spacing of ``dtype`` at each value (float64)."""
    q = values.to(dtype).abs()
    return (torch.nextafter(q, torch.full_like(q, float("inf"))) - q).double()


def compare_network_inputs(inversion_inputs, reconstruction_inputs, dtype: torch.dtype = torch.float32
                           ) -> InputComparison:
    """Compare the ``(t, z)`` inputs two :class:`~bdia.RecordingModel` runs gave the network; see :class:`InputComparison`.

    A network that runs in ``dtype`` returns the same output for the same input bits (given the same
    batch and kernels); once any bit differs, its output may differ by its own rounding, which a float64
    round trip then carries into the result.
    """
    by_t: dict[float, list[Tensor]] = {}
    for t, z in inversion_inputs:
        by_t.setdefault(float(t), []).append(z)
    flips = elements = 0
    expected, max_ulps, flipped = 0.0, 0.0, []
    for k, (t, z) in enumerate(reconstruction_inputs):
        candidates = by_t.get(float(t))
        if not candidates:
            raise ValueError(f"reconstruction call {k} at t = {t:g} has no inversion call at that timestep to compare "
                             "with; compare runs on the same grid")
        nearest = min(candidates, key=lambda c: (c.double() - z.double()).abs().max().item()
                      if c.shape == z.shape else float("inf"))
        if nearest.shape != z.shape:
            raise ValueError(f"reconstruction call {k} has input shape {tuple(z.shape)}, the inversion calls at "
                             f"t = {t:g} have {[tuple(c.shape) for c in candidates]}")
        gap = (nearest.double() - z.double()).abs()
        ulps = gap / _ulp(z, dtype)
        changed = int((nearest.to(dtype) != z.to(dtype)).sum())
        flips += changed
        elements += z.numel()
        expected += float(ulps.clamp(max=1.0).sum())
        max_ulps = max(max_ulps, float(ulps.max()))
        if changed:
            flipped.append((k, float(t), changed))
    return InputComparison(dtype, len(reconstruction_inputs), elements, flips, expected, max_ulps, tuple(flipped))


@dataclass
class RoundTrip:
    """One inversion followed by reconstruction; ``inputs`` when :func:`round_trip` was asked to compare them."""

    spec: MethodSpec
    num_steps: int
    error: float
    invert_calls: int
    reconstruct_calls: int
    invert_seconds: float
    reconstruct_seconds: float
    reconstruction: Tensor
    state: object
    inputs: InputComparison | None = None
    input_moved: float = 0.0  #: with a lattice: how far rounding the input onto it moved it (max abs)

    @property
    def calls(self) -> int:
        return self.invert_calls + self.reconstruct_calls


def _synchronize(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def round_trip(model, x0: Tensor, schedule, num_steps: int, spec: MethodSpec | str,
               compare_inputs: torch.dtype | None = None, **run_options) -> RoundTrip:
    """Invert ``x0``, reconstruct it, and measure error, network calls and wall time of each half.

    With a lattice (``spec`` ``bdia:gamma=1.0,lattice=true``) the error is measured against the input rounded
    onto the lattice, which is what was inverted; ``RoundTrip.input_moved`` records how far that rounding
    moved the input.

    With ``compare_inputs=torch.float32`` (the network's dtype) every network input is recorded and
    ``RoundTrip.inputs`` says whether reconstruction gave the network the same input bits as inversion
    (:func:`compare_network_inputs`); the recording costs memory and time, so do not time such a run.
    """
    spec = MethodSpec.parse(spec) if isinstance(spec, str) else spec
    if compare_inputs is not None:
        counting = RecordingModel(model.model if isinstance(model, CountingModel) else model)
    else:
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
    inputs = None
    if compare_inputs is not None:
        inputs = compare_network_inputs(counting.inputs[:invert_calls], counting.inputs[invert_calls:], compare_inputs)
    lattice = state.options.get("lattice")
    # on a lattice the inversion starts from the input rounded onto it: the round trip returns that, bit for bit
    target = x0 if lattice is None else lattice_round(x0, lattice)
    return RoundTrip(spec, num_steps, relative_error(rec, target), invert_calls, counting.calls, mid - start,
                     end - mid, rec, state, inputs, state.noise_stats.get("input_moved", 0.0))
