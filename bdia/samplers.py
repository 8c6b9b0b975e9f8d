"""Trajectory drivers: :func:`sample` and :func:`invert` for every method.

The grid of a run is ``schedule.timesteps(num_steps)``: ``t_N > ... > t_1 > t_0``. Sampling walks it
down, inversion walks it up, and an :class:`InversionState` carries exactly what reconstruction
needs from one to the other:

============  =============================  =======================  ===========
method        state (at the noisy end)       network calls: invert    reconstruct
============  =============================  =======================  ===========
``ddim``      ``z_N``                        N (approximate, eq. 10)  N
``edict``     the pair ``(x_N, y_N)``        2N                       2N
``bdia``      the pair ``(z_N, z_{N-1})``    N                        N - 1
``obelm``     the pair ``(z_N, z_{N-1})``    N                        N - 1
``bdia-edm``  the pair ``(z_N, z_{N-1})``    2N - 2                   2N - 3
============  =============================  =======================  ===========

``heun`` samples only (it has no exact inverse).
"""

from __future__ import annotations

import math
import operator
import warnings
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import steps
from .schedules import Schedule

__all__ = ["sample", "invert", "InversionState", "NonFiniteError", "ExactnessWarning", "METHODS",
           "INVERTIBLE_METHODS", "EXACT_METHODS", "method_defaults", "rounding_amplification", "default_lattice"]

METHODS = ("ddim", "edict", "bdia", "obelm", "heun", "bdia-edm")
INVERTIBLE_METHODS = ("ddim", "edict", "bdia", "obelm", "bdia-edm")
EXACT_METHODS = ("edict", "bdia", "obelm", "bdia-edm")

_METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "ddim": {},
    "edict": {"p": 0.93, "leapfrog": True},
    "bdia": {"gamma": 1.0, "lattice": None},
    "obelm": {},
    "heun": {},
    "bdia-edm": {"gamma": 1.0, "lattice": None},
}
#: mantissa bits of each dtype (without the implicit bit): multiples of 2^-k below 2^(bits - k) add exactly
_MANTISSA = {torch.float64: 52, torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}
_MIN_STEPS = {"ddim": 1, "edict": 1, "bdia": 2, "obelm": 2, "heun": 1, "bdia-edm": 2}
_RUN_OPTIONS = ("progress", "callback", "return_trajectory")
#: an inversion whose rounding amplification (a priori, or measured as the growth of its states over their
#: noise level) exceeds this gets an :class:`ExactnessWarning`
AMPLIFICATION_WARN = 1e3


class NonFiniteError(FloatingPointError):
    """A trajectory produced NaN or infinity; the message names the step where it first appeared."""


class ExactnessWarning(UserWarning):
    """The requested inversion will not round-trip exactly (low precision, or rounding amplified by 1/gamma)."""


def method_defaults(method: str) -> dict[str, Any]:
    """The default options of ``method`` (a copy)."""
    _check_method(method)
    return dict(_METHOD_OPTIONS[method])


@dataclass(frozen=True)
class InversionState:
    """What :func:`invert` hands to :func:`sample` for reconstruction or editing.

    ``latents`` holds the noisy end of the inverted trajectory: ``(z_N, z_{N-1})`` for ``bdia``,
    ``obelm`` and ``bdia-edm``, the coupled pair ``(x_N, y_N)`` for ``edict``, ``(z_N,)`` for ``ddim``.
    ``timesteps`` is the part of the grid that was traversed, ``[t_K, ..., t_0]`` (``K = N`` unless
    ``strength < 1``). ``noise_stats`` compares the inverted states with the noise level of their
    timesteps: ``ratio`` is the rms of ``z_K`` over the rms expected at ``t_K`` for data of this rms
    (``sqrt(alpha^2 rms(x0)^2 + sigma^2)``), ``peak_ratio`` the largest such ratio along the trajectory,
    ``amplification_bound`` the a-priori bound of :func:`rounding_amplification`, and with a lattice
    ``input_moved`` the largest change that rounding the input onto it made.
    """

    method: str
    num_steps: int
    options: dict
    timesteps: Tensor
    latents: tuple
    shape: tuple = field(default=())
    levels: Tensor | None = None  # (alpha, sigma) at each timestep: identifies the schedule
    #: the inverted states against the noise level of their timesteps (see :func:`invert`)
    noise_stats: dict = field(default_factory=dict)
    #: what the model was conditioned on (e.g. guidance scale, prompt fingerprint), for the adapters to check
    conditioning: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.shape and self.latents:
            object.__setattr__(self, "shape", tuple(self.latents[0].shape))

    @property
    def z(self) -> Tensor:
        """The state at the noisy end, ``z_{t_K}`` (for EDICT: ``x``)."""
        return self.latents[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.latents[0].dtype

    @property
    def device(self) -> torch.device:
        return self.latents[0].device

    @property
    def num_inverted_steps(self) -> int:
        return len(self.timesteps) - 1

    def to(self, *args, **kwargs) -> "InversionState":
        """A copy with every latent moved or cast by ``Tensor.to``."""
        return dataclasses.replace(self, latents=tuple(z.to(*args, **kwargs) for z in self.latents))


# ---------------------------------------------------------------------------------------------
# validation


def _check_method(method) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(repr(m) for m in METHODS)}")


def _check_gamma(gamma) -> float:
    try:
        gamma = float(gamma)
    except (TypeError, ValueError):
        raise TypeError(f"gamma must be a number in [0, 1], got {gamma!r}") from None
    if not (0.0 <= gamma <= 1.0):  # also rejects nan
        raise ValueError(f"gamma must be in [0, 1] (paper eq. 29), got {gamma}")
    return gamma


def _resolve(method: str, options: dict, *, inverting: bool) -> tuple[dict, dict]:
    """Split ``options`` into method options (defaults filled in, validated) and run options."""
    _check_method(method)
    if "lattice" in options and "lattice" not in _METHOD_OPTIONS[method]:
        raise TypeError(f"lattice is an option of 'bdia' and 'bdia-edm' with gamma = 1 only: {method!r}'s update "
                        "multiplies the carried state by a coefficient other than 1 (EDICT's mixing weight p, O-BELM's "
                        "step-size ratios), so a state rounded onto a lattice cannot be recovered exactly")
    allowed = set(_METHOD_OPTIONS[method]) | set(_RUN_OPTIONS) | ({"strength"} if inverting else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for method {method!r}; "
                        f"allowed: {', '.join(sorted(allowed))}")
    method_opts = {k: options.get(k, v) for k, v in _METHOD_OPTIONS[method].items()}
    if "gamma" in method_opts:
        method_opts["gamma"] = _check_gamma(method_opts["gamma"])
    if "p" in method_opts:
        if isinstance(method_opts["p"], bool) or not isinstance(method_opts["p"], (int, float)):
            raise TypeError(f"EDICT mixing weight p must be a number in (0, 1], got {method_opts['p']!r}")
        p = float(method_opts["p"])
        if not 0.0 < p <= 1.0:
            raise ValueError(f"EDICT mixing weight p must be in (0, 1], got {p}")
        method_opts["p"] = p
    if "leapfrog" in method_opts and not isinstance(method_opts["leapfrog"], bool):
        raise TypeError(f"leapfrog must be True or False, got {method_opts['leapfrog']!r}")
    if "lattice" in method_opts:
        method_opts["lattice"] = _check_lattice(method, method_opts["lattice"], method_opts["gamma"])
    run_opts = {k: options[k] for k in options if k not in method_opts}
    callback = run_opts.get("callback")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step_index, t, state)")
    return method_opts, run_opts


def _check_lattice(method: str, lattice, gamma: float):
    """``None`` (off), ``"auto"`` (chosen per dtype at run time) or a power of two ``2^-k``."""
    if lattice is None or lattice is False:
        return None
    if gamma != 1.0:
        raise ValueError(f"lattice needs gamma = 1, got gamma={gamma}: only then is the update the leapfrog map "
                         "z_{i-1} = z_{i+1} + g_i(z_i), whose carried state has coefficient exactly 1; with gamma < 1 the "
                         "inverse divides by gamma and the rounding cannot be undone")
    if lattice is True or lattice == "auto":
        return "auto"
    if isinstance(lattice, bool) or not isinstance(lattice, (int, float)) or not math.isfinite(lattice) or lattice <= 0:
        raise TypeError(f"lattice must be True (a spacing chosen for the dtype), or a power of two such as 2**-40, "
                        f"got {lattice!r}")
    mantissa, _ = math.frexp(lattice)
    if mantissa != 0.5:
        raise ValueError(f"the lattice spacing must be a power of two (2**-k) so that rounding onto it is exact, got "
                         f"{lattice!r}")
    return float(lattice)


def default_lattice(dtype: torch.dtype, schedule: Schedule, num_steps: int) -> float:
    """The lattice spacing ``2^-k`` for states of ``dtype``: ``k = mantissa bits - ceil(log2(bound))``, with the bound
    on ``|z|`` taken as ``8 * init_noise_sigma + 8`` (16 on VP schedules, 1024 on EDM's)."""
    return _lattice_spacing(dtype, 8 * schedule.init_noise_sigma(num_steps) + 8)


def _lattice_spacing(dtype: torch.dtype, bound: float) -> float:
    """The finest lattice ``2^-k`` on which ``dtype`` adds states with ``|z| < bound`` exactly:
    ``k = mantissa bits - ceil(log2(bound))``."""
    if dtype not in _MANTISSA:
        raise TypeError(f"no lattice for {dtype} states; allowed: float64, float32, bfloat16, float16")
    bound_bits = math.ceil(math.log2(bound))
    k = _MANTISSA[dtype] - bound_bits
    if k < 1:
        raise ValueError(f"{dtype} has too few mantissa bits for a lattice on this schedule (|z| up to 2^{bound_bits}); "
                         "use float32 or float64 states")
    return 2.0 ** -k


def _check_lattice_range(z: Tensor, lattice: float, where: str) -> None:
    """``ValueError`` when a state has left the range in which its dtype adds multiples of ``lattice`` exactly."""
    limit = 2.0 ** _MANTISSA[z.dtype] * lattice
    top = float(z.abs().max())
    if top >= limit:
        raise ValueError(f"{where} a state reached |z| = {top:.4g}, beyond the range in which {z.dtype} adds multiples "
                         f"of the lattice {lattice:.3g} exactly (|z| < {limit:.4g}); use a coarser lattice or float64 "
                         "states")


def _check_num_steps(method: str, num_steps) -> int:
    try:
        if isinstance(num_steps, bool):
            raise TypeError
        num_steps = operator.index(num_steps)
    except TypeError:
        raise TypeError(f"num_steps must be an integer, got {num_steps!r}") from None
    if num_steps < _MIN_STEPS[method]:
        why = " (a two-step method: its first step seeds the pair)" if _MIN_STEPS[method] > 1 else ""
        least = _MIN_STEPS[method]
        raise ValueError(f"method {method!r} needs at least {least} step{'s' if least > 1 else ''}{why}, "
                         f"got num_steps={num_steps}")
    return num_steps


def _check_tensor(name: str, z) -> Tensor:
    if not torch.is_tensor(z):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if z.shape[0] == 0 or z.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(z.shape)}): give at least one sample")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return z


def _grid(schedule: Schedule, num_steps: int, intervals: int) -> Tensor:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a bdia Schedule (VPSchedule, EDMSchedule), got {type(schedule).__name__}")
    ts = schedule.timesteps(num_steps)
    return ts[len(ts) - 1 - intervals:]


# ---------------------------------------------------------------------------------------------
# the run loop's bookkeeping


class _Run:
    """Network calls, progress, callbacks, trajectory, non-finite checks, the lattice's range and the growth of
    the states over their noise level, for one trajectory."""

    def __init__(self, model, method: str, direction: str, ts: Tensor, schedule: Schedule, run_opts: dict,
                 lattice: float | None = None, data_rms: float | None = None):
        self.model, self.method, self.direction = model, method, direction
        self.ts = [float(t) for t in ts]
        self.levels = [schedule.level(t) for t in self.ts]
        self.callback = run_opts.get("callback")
        self.trajectory: list[Tensor] | None = [] if run_opts.get("return_trajectory") else None
        self.bar = tqdm(total=len(self.ts) - 1, desc=f"{method} {direction}", disable=not run_opts.get("progress"),
                        leave=False)
        self.lattice = lattice
        self.data_rms = data_rms  # tracks the states' growth over their noise level when given
        self.peak_ratio = 0.0
        self.warned_dtype = False

    def eps(self, z: Tensor, j: int) -> Tensor:
        try:
            out = self.model(z, self.ts[j])
        except RuntimeError as error:
            if "dtype" in str(error) or "Half" in str(error) or "Double" in str(error):
                raise TypeError(f"the model failed on {z.dtype} states ({str(error).splitlines()[0]}): its parameters "
                                "have another dtype. Cast at the model's boundary, e.g. "
                                "lambda z, t: net(z.to(net_dtype), t).to(z.dtype), or use bdia.diffusers.UNetEpsModel, "
                                "which runs the network in its own dtype") from error
            raise
        if not torch.is_tensor(out) or out.shape != z.shape:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"the model returned {got} for a state of shape {tuple(z.shape)}; "
                             "a model must return eps with the shape of its input")
        if not out.is_floating_point():
            raise TypeError(f"the model returned {out.dtype} values; eps must be a floating-point tensor")
        if out.dtype != z.dtype:
            if torch.finfo(out.dtype).eps > torch.finfo(z.dtype).eps and not self.warned_dtype:
                self.warned_dtype = True
                warnings.warn(f"the model returned {out.dtype} eps for {z.dtype} states: the round trip is exact only "
                              "where the network is fed the same input bits in both directions (see "
                              "bdia.experiments.compare_network_inputs), else to the model's precision",
                              ExactnessWarning, stacklevel=5)
            out = out.to(z.dtype)
        return out

    def eps_fn(self, j: int) -> Callable[[Tensor], Tensor]:
        return lambda z: self.eps(z, j)

    def start(self, z: Tensor) -> None:
        if self.trajectory is not None:
            self.trajectory.append(z)
        self._track(z, 0)

    def _track(self, z: Tensor, j: int) -> None:
        if self.data_rms is None:
            return
        self.peak_ratio = max(self.peak_ratio, _rms(z) / _expected_rms(self.levels[j], self.data_rms))

    def done(self, step: int, j: int, *states: Tensor) -> None:
        """Record that step number ``step`` produced ``states`` at grid point ``j``."""
        for z in states:
            if not torch.isfinite(z).all():
                raise NonFiniteError(
                    f"non-finite values (nan/inf) first appeared at step {step + 1} of {len(self.ts) - 1} of "
                    f"{self.method!r} {self.direction} (t = {self.ts[j]:.6g}); check the model's output and the "
                    "schedule there")
            if self.lattice is not None:
                _check_lattice_range(z, self.lattice,
                                    f"at step {step + 1} of {self.method!r} {self.direction} (t = {self.ts[j]:.6g})")
            self._track(z, j)
        if self.trajectory is not None:
            self.trajectory.append(states[0])
        if self.callback is not None:
            self.callback(step, self.ts[j], states[0])
        self.bar.update(1)

    def __enter__(self) -> "_Run":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def finish(self, result):
        return (result, self.trajectory) if self.trajectory is not None else result


# ---------------------------------------------------------------------------------------------
# sampling: the grid ts = [t_K, ..., t_0] walked from j = 0 (noisiest) to j = K


def _sample_ddim(run: _Run, latents, opts):
    (z,) = latents
    lv = run.levels
    for j in range(len(lv) - 1):
        z = steps.ddim_step(z, run.eps(z, j), lv[j], lv[j + 1])
        run.done(j, j + 1, z)
    return z


def _sample_heun(run: _Run, latents, opts):
    (z,) = latents
    last = len(run.levels) - 1
    for j in range(last):
        z = _heun_or_euler(run, z, run.eps(z, j), j, last)
        run.done(j, j + 1, z)
    return z


def _heun_or_euler(run: _Run, z: Tensor, eps: Tensor, j: int, last: int) -> Tensor:
    # EDM: second-order correction on every step but the one that lands on the data end
    lv = run.levels
    if j + 1 < last:
        return steps.heun_step(z, eps, run.eps_fn(j + 1), lv[j], lv[j + 1])
    return steps.ddim_step(z, eps, lv[j], lv[j + 1])


def _sample_edict(run: _Run, latents, opts):
    x, y = latents if len(latents) == 2 else (latents[0], latents[0])
    lv = run.levels
    for j in range(len(lv) - 1):
        swap = opts["leapfrog"] and j % 2 == 1
        x, y = steps.edict_step(x, y, run.eps_fn(j), lv[j], lv[j + 1], opts["p"], swap)
        run.done(j, j + 1, x, y)
    return x


def _on_lattice(run: _Run, z: Tensor) -> Tensor:
    return z if run.lattice is None else steps.lattice_round(z, run.lattice)


def _sample_two_step(run: _Run, latents, opts, update: Callable, first: Callable):
    """Shared loop of the exact two-step methods: one single-step start, then ``update`` for j >= 1."""
    lv = run.levels
    if len(latents) == 2:  # reconstruction: the pair (z_K, z_{K-1}) is given
        z_prev, z_cur = latents
    else:
        z_prev = latents[0]
        z_cur = _on_lattice(run, first(run, z_prev, run.eps(z_prev, 0), 0))
        run.done(0, 1, z_cur)
    for j in range(1, len(lv) - 1):
        z_prev, z_cur = z_cur, update(run, z_prev, z_cur, run.eps(z_cur, j), j)
        run.done(j, j + 1, z_cur)
    return z_cur


def _ddim_first(run: _Run, z, eps, j):
    return steps.ddim_step(z, eps, run.levels[j], run.levels[j + 1])


def _heun_first(run: _Run, z, eps, j):
    return _heun_or_euler(run, z, eps, j, len(run.levels) - 1)


def _bdia_update(run: _Run, z_prev, z_cur, eps, j, gamma):
    lv = run.levels
    if run.lattice is not None:  # gamma = 1: the leapfrog map with its increment rounded onto the lattice
        return z_prev + steps.lattice_round(steps.bdia_increment(z_cur, eps, lv[j - 1], lv[j], lv[j + 1]), run.lattice)
    return steps.bdia_step(z_prev, z_cur, eps, lv[j - 1], lv[j], lv[j + 1], gamma)


def _obelm_update(run: _Run, z_prev, z_cur, eps, j):
    lv = run.levels
    return steps.obelm_step(z_prev, z_cur, eps, lv[j - 1], lv[j], lv[j + 1])


def _bdia_edm_update(run: _Run, z_prev, z_cur, eps, j, gamma):
    lv = run.levels
    z_forward = _heun_or_euler(run, z_cur, eps, j, len(lv) - 1)
    if run.lattice is not None:  # alpha = 1 here (checked): x = z, and gamma = 1 makes it a leapfrog map
        increment = steps.bdia_edm_increment(z_cur, z_forward, eps, lv[j - 1], lv[j], lv[j + 1])
        return z_prev + steps.lattice_round(increment, run.lattice)
    return steps.bdia_edm_step(z_prev, z_cur, z_forward, eps, lv[j - 1], lv[j], lv[j + 1], gamma)


def _sample_bdia(run, latents, opts):
    return _sample_two_step(run, latents, opts, lambda *a: _bdia_update(*a, opts["gamma"]), _ddim_first)


def _sample_obelm(run, latents, opts):
    return _sample_two_step(run, latents, opts, _obelm_update, _ddim_first)


def _sample_bdia_edm(run, latents, opts):
    return _sample_two_step(run, latents, opts, lambda *a: _bdia_edm_update(*a, opts["gamma"]), _heun_first)


_SAMPLERS = {"ddim": _sample_ddim, "heun": _sample_heun, "edict": _sample_edict, "bdia": _sample_bdia,
             "obelm": _sample_obelm, "bdia-edm": _sample_bdia_edm}


# ---------------------------------------------------------------------------------------------
# inversion: the grid ts = [t_0, ..., t_K] walked from m = 0 (data) to m = K


def _invert_ddim(run: _Run, z, opts):
    lv = run.levels
    for m in range(len(lv) - 1):
        # eq. 10: eps is evaluated at the known, cleaner state but at the target timestep
        z = steps.ddim_inversion_step(z, run.eps(z, m + 1), lv[m], lv[m + 1])
        run.done(m, m + 1, z)
    return (z,)


def _invert_edict(run: _Run, z, opts):
    lv, x, y = run.levels, z, z
    K = len(lv) - 1
    for m in range(K):
        swap = opts["leapfrog"] and (K - 1 - m) % 2 == 1  # the parity of this interval when sampling
        x, y = steps.edict_inverse_step(x, y, run.eps_fn(m + 1), lv[m + 1], lv[m], opts["p"], swap)
        run.done(m, m + 1, x, y)
    return (x, y)


def _invert_two_step(run: _Run, z0, inverse_update: Callable):
    """Seed ``z_1`` with one DDIM inversion step (approximate, it only starts the pair), then exact steps."""
    lv = run.levels
    z_next, z_cur = z0, _on_lattice(run, steps.ddim_inversion_step(z0, run.eps(z0, 1), lv[0], lv[1]))
    run.done(0, 1, z_cur)
    for m in range(1, len(lv) - 1):
        z_next, z_cur = z_cur, inverse_update(run, z_next, z_cur, run.eps(z_cur, m), m)
        run.done(m, m + 1, z_cur)
    return (z_cur, z_next)


def _invert_bdia(run: _Run, z0, opts):
    gamma = opts["gamma"]

    def update(run, z_next, z_cur, eps, m):
        lv = run.levels
        if run.lattice is not None:
            increment = steps.bdia_increment(z_cur, eps, lv[m + 1], lv[m], lv[m - 1])
            return z_next - steps.lattice_round(increment, run.lattice)
        return steps.bdia_inverse_step(z_next, z_cur, eps, lv[m + 1], lv[m], lv[m - 1], gamma)

    return _invert_two_step(run, z0, update)


def _invert_obelm(run: _Run, z0, opts):
    def update(run, z_next, z_cur, eps, m):
        lv = run.levels
        return steps.obelm_inverse_step(z_next, z_cur, eps, lv[m + 1], lv[m], lv[m - 1])

    return _invert_two_step(run, z0, update)


def _invert_bdia_edm(run: _Run, z0, opts):
    gamma = opts["gamma"]

    def update(run, z_next, z_cur, eps, m):
        lv = run.levels
        if m > 1:  # the forward estimate towards t_{m-1}: Heun, or Euler when it lands on the data end
            z_forward = steps.heun_step(z_cur, eps, run.eps_fn(m - 1), lv[m], lv[m - 1])
        else:
            z_forward = steps.ddim_step(z_cur, eps, lv[m], lv[m - 1])
        if run.lattice is not None:
            increment = steps.bdia_edm_increment(z_cur, z_forward, eps, lv[m + 1], lv[m], lv[m - 1])
            return z_next - steps.lattice_round(increment, run.lattice)
        return steps.bdia_edm_inverse_step(z_next, z_cur, z_forward, eps, lv[m + 1], lv[m], lv[m - 1], gamma)

    return _invert_two_step(run, z0, update)


_INVERTERS = {"ddim": _invert_ddim, "edict": _invert_edict, "bdia": _invert_bdia, "obelm": _invert_obelm,
              "bdia-edm": _invert_bdia_edm}


# ---------------------------------------------------------------------------------------------
# public drivers


def rounding_amplification(method: str, num_inverted_steps: int, schedule: Schedule | None = None,
                           num_steps: int | None = None, **options) -> float:
    """A priori bound on how much an inversion of ``num_inverted_steps`` steps can amplify rounding errors.

    The product, over the inverse steps, of the coefficient that multiplies the carried state, relative to the
    growth of the noise scale ``sqrt(alpha^2 + sigma^2)`` (computed in log space; ``inf`` beyond float range):

    * ``bdia``, ``bdia-edm``: ``(1/gamma)^(K-1)``; BDIA's DDIM seed step excites this mode, and the bound is
      reached (chapter 1 measures a growth of 1.99 per step at gamma = 0.5);
    * ``obelm``: ``prod |1/c_{i+1}|`` of its inverse update on the run's grid (needs ``schedule`` and ``num_steps``);
      about 1e9 on a 5-step Karras grid, where the measured growth of its states stays below 10;
    * ``edict``: ``(1/p^2)^K``, the inverse mixing's second eigenvalue; its coupled half-steps keep the measured
      growth far below it;
    * ``ddim``: 1.

    Since EDICT and O-BELM stay far below their bounds, :func:`invert` warns a priori for BDIA only and checks
    every method's measured growth (``InversionState.noise_stats``) afterwards.
    """
    K = num_inverted_steps
    if method in ("bdia", "bdia-edm"):
        gamma = float(options.get("gamma", 1.0))
        if K <= 1:
            return 1.0
        if gamma == 0:
            return math.inf
        log_amp = (K - 1) * -math.log(gamma)
    elif method == "edict":
        log_amp = K * -2.0 * math.log(float(options.get("p", 0.93)))
    elif method == "obelm":
        if schedule is None or num_steps is None:
            raise TypeError("O-BELM's bound depends on the grid: pass schedule= and num_steps=")
        lv = [schedule.level(float(t)) for t in _grid(schedule, num_steps, K).flip(0)]  # t_0 .. t_K
        scale = [math.hypot(level.alpha, level.sigma) for level in lv]
        log_amp = 0.0
        for m in range(1, K):
            c_prev = steps._obelm_coefficients(lv[m + 1], lv[m], lv[m - 1])[0]
            log_amp += -math.log(abs(c_prev)) - math.log(scale[m + 1] / scale[m - 1])
    else:
        _check_method(method)
        return 1.0
    return math.exp(log_amp) if log_amp < 709.0 else math.inf


def _rms(z: Tensor) -> float:
    return float(z.double().pow(2).mean().sqrt())


def _expected_rms(level, data_rms: float) -> float:
    """The rms of ``alpha x + sigma eps`` for data of rms ``data_rms`` and standard normal ``eps``."""
    return math.sqrt((level.alpha * data_rms) ** 2 + level.sigma**2)


@torch.no_grad()
def invert(model, x0: Tensor, schedule: Schedule, num_steps: int, method: str = "bdia", **options):
    """Run the trajectory of ``method`` from data ``x0`` up to noise; returns an :class:`InversionState`.

    Options: ``gamma`` (``bdia``, ``bdia-edm``; in (0, 1], default 1.0), ``lattice`` (``bdia``, ``bdia-edm`` with
    ``gamma = 1``: ``True`` or a spacing ``2**-k``; see below), ``p`` and ``leapfrog`` (``edict``; defaults 0.93
    and True), ``strength`` (fraction of the ``num_steps`` grid to invert, from the data end; default 1.0),
    ``progress`` (a tqdm bar), ``callback(step_index, t, state)``, ``return_trajectory`` (then
    ``(state, [z_{t_0}, ..., z_{t_K}])`` is returned).

    ``sample(model, state, schedule, num_steps, method)`` then returns ``x0`` up to rounding for the exact
    methods (``edict``, ``bdia``, ``obelm``, ``bdia-edm``); ``ddim`` is the classic approximate inversion.

    **Bit-exact inversion.** With ``lattice``, BDIA (gamma = 1) keeps every state on the lattice of multiples
    of ``2^-k`` and rounds each increment ``g_i`` onto it before adding it; sums of such numbers are exact, so
    reconstruction retraces the inversion bit for bit and returns the input *rounded onto the lattice*
    (``noise_stats["input_moved"]`` says how far that moved it) exactly, whatever the network's precision,
    provided the network returns the same output for the same input bits (same batch; on a GPU,
    ``torch.use_deterministic_algorithms(True)``). ``lattice=True`` picks ``k`` from the dtype
    (:func:`default_lattice`); a state outside the exact range stops the run with an error. BDIA-EDM takes
    the lattice on schedules with ``alpha = 1`` (EDM's), where its carried state is ``x = z``.

    Warnings (:class:`ExactnessWarning`): half-precision states; a BDIA bound ``(1/gamma)^(K-1)`` above 1e3; and,
    for every method, states that grew to more than 1e3 times the noise level of their timestep.
    """
    _check_method(method)
    if method not in INVERTIBLE_METHODS:
        raise ValueError(f"method {method!r} has no inverse; invertible methods: "
                         f"{', '.join(repr(m) for m in INVERTIBLE_METHODS)} ('bdia-edm' is the exact EDM-style one)")
    method_opts, run_opts = _resolve(method, options, inverting=True)
    num_steps = _check_num_steps(method, num_steps)
    x0 = _check_tensor("x0", x0)
    strength = run_opts.pop("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number in (0, 1], got {strength!r}")
    strength = float(strength)
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    intervals = round(strength * num_steps)
    if intervals < _MIN_STEPS[method]:
        raise ValueError(f"strength={strength} of {num_steps} steps inverts {intervals} step(s); method {method!r} "
                         f"needs at least {_MIN_STEPS[method]}")
    if method in ("bdia", "bdia-edm") and method_opts["gamma"] == 0.0:
        raise ValueError("inversion needs gamma > 0: the inverse update divides by gamma (gamma = 0 is plain DDIM, "
                         "which has no exact inverse); use gamma in (0, 1], e.g. 1.0 or 0.96")
    bound = rounding_amplification(method, intervals, schedule=_as_schedule(schedule), num_steps=num_steps,
                                   **method_opts)
    warned = False
    if method in ("bdia", "bdia-edm") and bound > AMPLIFICATION_WARN:
        warned = True
        warnings.warn(f"{method} inversion with gamma={method_opts['gamma']} over {intervals} steps amplifies "
                      f"rounding errors by about (1/gamma)^(N-1) = {bound:.3g}: the round trip will not be exact. "
                      "Use gamma closer to 1 or fewer steps.", ExactnessWarning, stacklevel=3)
    if method != "ddim" and x0.dtype in (torch.float16, torch.bfloat16):
        warnings.warn(f"inversion in {x0.dtype} is not exact: rounding errors of half precision dominate; use "
                      "float32 or float64 latents for exact round trips", ExactnessWarning, stacklevel=3)
    ts = _grid(schedule, num_steps, intervals).flip(0)
    lattice = _lattice_for(method, method_opts, x0.dtype, schedule, num_steps)
    moved = None
    if lattice is not None:
        _warn_if_nondeterministic(x0)
        on_lattice = steps.lattice_round(x0, lattice)
        moved = float((on_lattice - x0).abs().max())
        x0 = on_lattice
    run = _Run(model, method, "inversion", ts, schedule, run_opts, lattice, data_rms=_rms(x0))
    run.start(x0)
    with run:
        latents = _INVERTERS[method](run, x0, method_opts)
    grid = ts.flip(0)
    expected = _expected_rms(schedule.level(float(grid[0])), run.data_rms)
    noise_stats = {"latent_rms": _rms(latents[0]), "expected_rms": expected, "ratio": _rms(latents[0]) / expected,
                   "peak_ratio": run.peak_ratio, "amplification_bound": bound, "input_rms": run.data_rms}
    if moved is not None:
        noise_stats["input_moved"] = moved
    if run.peak_ratio > AMPLIFICATION_WARN and not warned:
        floor = torch.finfo(x0.dtype).eps * run.peak_ratio
        warnings.warn(f"the {method} inversion's states grew to {run.peak_ratio:.3g} times the noise level of their "
                      f"timesteps: rounding at that scale limits the round trip to about {floor:.1e} (relative), and "
                      "edits from this latent start far from noise", ExactnessWarning, stacklevel=3)
    options_record = {**method_opts, **({"lattice": lattice} if lattice is not None else {})}
    state = InversionState(method, num_steps, options_record, grid, tuple(latents),
                           levels=_levels_tensor(schedule, grid), noise_stats=noise_stats)
    return run.finish(state)


def _as_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a bdia Schedule (VPSchedule, EDMSchedule), got {type(schedule).__name__}")
    return schedule


def _nondeterministic_kernels(z: Tensor) -> bool:
    """Whether the network may return different outputs for the same input bits: CUDA without deterministic algorithms."""
    return z.is_cuda and not torch.are_deterministic_algorithms_enabled()


def _warn_if_nondeterministic(z: Tensor) -> None:
    if _nondeterministic_kernels(z):
        warnings.warn("bit-exact inversion on the lattice needs a network that returns the same output for the same "
                      "input bits; on a GPU call torch.use_deterministic_algorithms(True) (and set "
                      "CUBLAS_WORKSPACE_CONFIG=:4096:8) before inverting, and keep the batch the same in both "
                      "directions", ExactnessWarning, stacklevel=4)


def _lattice_for(method: str, method_opts: dict, dtype: torch.dtype, schedule: Schedule, num_steps: int):
    """The lattice spacing a run uses (None without one); checks what the lattice needs of the schedule and dtype."""
    lattice = method_opts.get("lattice")
    if lattice is None:
        return None
    if method == "bdia-edm":
        alphas = {round(lvl.alpha, 15) for lvl in (schedule.level(float(t)) for t in schedule.timesteps(num_steps))}
        if alphas != {1.0}:
            raise ValueError("bdia-edm's lattice needs a schedule with alpha = 1 (EDMSchedule): its leapfrog form holds "
                             "for x = z / alpha, and dividing by alpha is not exact; use method='bdia' on this schedule")
    if lattice == "auto":
        return default_lattice(dtype, schedule, num_steps)
    if dtype not in _MANTISSA:
        raise TypeError(f"no lattice for {dtype} states; allowed: float64, float32, bfloat16, float16")
    return lattice


def _check_state(state: InversionState, method: str, num_steps: int, options: dict, schedule: Schedule) -> Tensor:
    if state.num_steps != num_steps:
        raise ValueError(f"step count mismatch: this inversion state was made with num_steps={state.num_steps}, "
                         f"not {num_steps}")
    for key, value in options.items():
        if key in state.options and state.options[key] != value:
            raise ValueError(f"option mismatch: the state was inverted with {key}={state.options[key]!r}, "
                             f"reconstruction asked for {key}={value!r}")
    expected_pairs = {"ddim": 1, "edict": 2, "bdia": 2, "obelm": 2, "bdia-edm": 2}[method]
    if len(state.latents) != expected_pairs:
        raise ValueError(f"a {method!r} inversion state holds {expected_pairs} latent(s), this one holds "
                         f"{len(state.latents)}")
    for k, z in enumerate(state.latents):
        _check_tensor(f"state.latents[{k}]", z)
        if tuple(z.shape) != tuple(state.shape):
            raise ValueError(f"shape mismatch: state.latents[{k}] has shape {tuple(z.shape)}, the state was "
                             f"inverted with shape {tuple(state.shape)}")
        if z.dtype != state.latents[0].dtype or z.device != state.latents[0].device:
            raise ValueError("the latents of an inversion state must share dtype and device")
    ts = _grid(schedule, num_steps, state.num_inverted_steps)
    if ts.shape != state.timesteps.shape or not torch.equal(ts, state.timesteps.to(ts)):
        raise ValueError("schedule mismatch: the state was inverted on the timesteps "
                         f"{[round(float(t), 4) for t in state.timesteps]}, this schedule and num_steps give "
                         f"{[round(float(t), 4) for t in ts]}")
    if state.levels is not None and not torch.equal(_levels_tensor(schedule, ts), state.levels):
        raise ValueError("schedule mismatch: same timesteps, but this schedule's noise levels (alpha, sigma) differ "
                         "from those the state was inverted with")
    return ts


def _levels_tensor(schedule: Schedule, ts: Tensor) -> Tensor:
    return torch.tensor([tuple(schedule.level(t)) for t in ts], dtype=torch.float64)


@torch.no_grad()
def sample(model, init, schedule: Schedule, num_steps: int, method: str = "bdia", **options):
    """Run ``method`` from ``init`` down to data and return the final sample.

    ``init`` is either the noise state ``z_{t_N}`` (fresh sampling; scale standard normal noise by
    ``schedule.init_noise_sigma(num_steps)``) or an :class:`InversionState` from :func:`invert`
    (reconstruction, or editing with another model). Options as in :func:`invert` (``gamma``
    may be 0 here: BDIA with ``gamma = 0`` is DDIM). With ``return_trajectory`` the result is
    ``(z_{t_0}, [z_{t_N}, ..., z_{t_0}])``.

    Network calls from noise: N for ``ddim``, ``bdia``, ``obelm``; 2N for ``edict``; 2N - 1 for ``heun``
    and ``bdia-edm``.
    """
    _check_method(method)
    num_steps = _check_num_steps(method, num_steps)
    if isinstance(init, InversionState):
        if init.method != method:
            raise ValueError(f"method mismatch: this inversion state was made by {init.method!r}, not {method!r}; "
                             f"reconstruct with method={init.method!r}")
        method_opts, run_opts = _resolve(method, {**init.options, **options}, inverting=False)
        explicit = {k: method_opts[k] for k in options if k in method_opts}
        ts = _check_state(init, method, num_steps, explicit, schedule)
        latents = init.latents
    else:
        method_opts, run_opts = _resolve(method, options, inverting=False)
        latents = (_check_tensor("init", init),)
        ts = _grid(schedule, num_steps, num_steps)
    lattice = _lattice_for(method, method_opts, latents[0].dtype, schedule, num_steps)
    if lattice is not None:
        _warn_if_nondeterministic(latents[0])
        if isinstance(init, InversionState):
            if init.options.get("lattice") != lattice or any(
                    not torch.equal(steps.lattice_round(z, lattice), z) for z in latents):
                raise ValueError(f"this state is not on the lattice {lattice:g}: reconstruct with the lattice its "
                                 f"inversion used ({init.options.get('lattice')!r}), from the state it returned")
        else:
            latents = (steps.lattice_round(latents[0], lattice),)
    run = _Run(model, method, "sampling", ts, schedule, run_opts, lattice)
    run.start(latents[0])
    if len(latents) == 2 and method != "edict":
        run.start(latents[1])  # the pair covers t_K and t_{K-1}
    with run:
        result = _SAMPLERS[method](run, latents, method_opts)
    return run.finish(result)

