"""Measurements shared by the book's chapters, the benchmark and the command line.

:func:`round_trip` inverts and reconstructs once (a method given as a :class:`~bdia.methods.MethodSpec`
or its text, ``"bdia:gamma=0.96"``) and reports the error and the network calls of each half;
:func:`compare_network_inputs` checks whether reconstruction fed the network the same input bits as
inversion did, which is what exactness needs from a network that runs in lower precision than the
latents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import InvalidValueError
from .methods import MethodSpec
from .models import CountingModel, RecordingModel
from .samplers import invert, sample
from .steps import lattice_round

__all__ = ["RoundTrip", "round_trip", "relative_error", "InputComparison", "compare_network_inputs"]


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
            raise InvalidValueError(f"reconstruction call {k} at t = {t:g} has no inversion call at that timestep to compare "
                             "with; compare runs on the same grid")
        nearest = min(candidates, key=lambda c: (c.double() - z.double()).abs().max().item()
                      if c.shape == z.shape else float("inf"))
        if nearest.shape != z.shape:
            raise InvalidValueError(f"reconstruction call {k} has input shape {tuple(z.shape)}, the inversion calls at "
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
