"""What bdia knows about each method, in one place: :data:`REGISTRY` maps a name to its :class:`Method`.

A record holds the method's options (defaults and checks), its minimum number of steps, its network
calls as a function of the steps walked, the latents its inversion state holds and how many grid points
they cover, whether its round trip is exact, whether it takes the lattice, its family (the DDIM family's
updates are written on the prediction pair; EDM's integrate eps in EDM space), the a-priori rounding
amplification of its inversion, and its two loops (in :mod:`bdia.loops`): ``sample(traj, latents, options)``
down the grid and ``invert(traj, x0, options)`` up it (``None`` for a method without an inverse). The
drivers :func:`bdia.sample` and :func:`bdia.invert`, the diffusers pipelines, FID and the benchmark ask the
registry; nothing else lists methods or tests their names.

**Adding a method.** Write its update rule in :mod:`bdia.steps` (a pure function citing its equation), its
loops in :mod:`bdia.loops`, and one :class:`Method` entry in :data:`REGISTRY`; ``tests/test_methods.py`` then
checks its call counts against a counting model, its option checks, its step budget and, if it is exact, its
round trip in float64 and float32. A new schedule family (a :class:`~bdia.schedules.Schedule` subclass) needs
no entry here: the loops work on any schedule's noise levels.

:class:`MethodSpec` names a method with its options, as the command line and the chapters write it
(``"bdia:gamma=0.96"``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import loops, steps
from .errors import InvalidTypeError, InvalidValueError, UnknownOptionError
from .exactness import auto_gamma
from .flow import FlowMatchSchedule
from .options import (AUTO, CONTROLLER, EARLY_STOP, EARLY_STOP_GROWTH, ETA, GAMMA, INNER_STEPS, LATTICE, LEAPFROG, LR,
                      SEED, START, STOP, TOLERANCE, Option, P)
from .schedules import VPSchedule, edm_variables

if TYPE_CHECKING:
    from torch import Tensor

    from .trajectory import Trajectory

__all__ = ["Option", "Calls", "Method", "REGISTRY", "METHODS", "INVERTIBLE_METHODS", "get_method",
           "method_defaults", "rounding_amplification", "AUTO", "MethodSpec", "parse_methods"]


@dataclass(frozen=True)
class Calls:
    """Network calls as functions of the steps walked: sampling from noise, inverting, reconstructing from the
    inversion state."""

    sample: Callable[[int], int]
    invert: Callable[[int], int] | None = None
    reconstruct: Callable[[int], int] | None = None


@dataclass(frozen=True)
class Method:
    """One method's record in :data:`REGISTRY`; see the module docstring.

    ``sample(traj, latents, options)`` and ``invert(traj, x0, options)`` are its loops (:mod:`bdia.loops`);
    ``calls`` its network calls per number of steps walked; ``state`` names the latents of its inversion
    state, ``state_span`` the grid points they cover; ``amplification(K, options, levels, variables)`` the
    a-priori rounding amplification of an inversion of ``K`` steps over the noise levels ``levels``
    (``t_0 .. t_K``) of a schedule whose Euler variables are ``variables``.
    """

    name: str
    summary: str
    sample: Callable[[Trajectory, tuple, dict], Tensor]
    invert: Callable[[Trajectory, Tensor, dict], tuple] | None
    calls: Calls
    options: dict = field(default_factory=dict)
    min_steps: int = 1
    state: tuple = ("z_K",)  #: what the inversion state's latents are
    state_span: int = 1  #: how many grid points they cover (2 for a pair of consecutive states)
    exact: bool = False
    takes_lattice: bool = False
    lattice_needs_alpha_one: bool = False  #: its leapfrog form holds for x = z / alpha (EDM space) only
    #: ``"ddim"``: updates written on (x0_hat, eps_hat), on the schedule's own grid; ``"edm"``: EDM's samplers,
    #: which integrate eps in EDM space (on EDM's Karras grid in the book's experiments); ``"flow"``: explicit
    #: rules of the rectified-flow literature
    family: str = "ddim"
    #: whether it can use a clipped or thresholded x0 prediction and stay what it is (exact where it was): a
    #: limited x0 is a function of z_i alone, which the two-step updates carry linearly, while EDICT's half-step
    #: would pass the state it transforms through the clip, and EDM's samplers integrate eps
    limits_x0: bool = True
    warns_a_priori: bool = False  #: whether its amplification bound is reached, so that inversion warns before it runs
    amplification: Callable[..., float] = lambda num_inverted_steps, options, levels, variables: 1.0
    #: the schedule classes it runs on (empty: any); RF-Solver and FireFlow evaluate the network at the data end
    schedules: tuple = ()
    #: whether it replaces a guided model's unconditional embedding (the model must offer the branches)
    needs_guided_model: bool = False
    #: whether ``calls.invert`` is an upper bound (an optimisation that may stop early) rather than the count
    invert_calls_at_most: bool = False
    #: the latents an inversion of ``K`` steps keeps, as a function of ``K`` (None: those its ``state`` names)
    stored: Callable[[int], int] | None = None
    #: why it runs on :attr:`schedules` only (for the error that refuses another schedule)
    schedules_why: str = ""
    #: how ``gamma="auto"`` becomes a number for an inversion: ``choose_gamma(num_inverted_steps, latents_dtype,
    #: network_dtype, tolerance, num_inputs)`` (None: the method has no gamma to choose)
    choose_gamma: Callable[..., float] | None = None
    #: whether regenerating its state under another condition edits; False for a method whose regeneration pins
    #: the source branch (Direct Inversion), which edits only beside that branch, with a control
    edits_alone: bool = True
    #: options a regeneration sets for itself (RF-Inversion's edit controller), never held against the inversion's
    regeneration_options: tuple = ()
    #: whether it edits by evaluating a source branch at every step (FlowEdit): an edit runs on the state tiled
    #: twice (:meth:`~bdia.InversionState.tile`) with a model conditioned on the sources, then the targets; alone it
    #: regenerates the source (the one model as both). Such a method has no sampler from noise, and
    #: ``calls.sample`` counts an edit's calls per image, both branches
    edits_beside_source: bool = False

    @property
    def invertible(self) -> bool:
        return self.invert is not None

    def stored_latents(self, num_inverted_steps: int) -> int:
        """How many latent-sized tensors an inversion of ``num_inverted_steps`` steps keeps for reconstruction."""
        return len(self.state) if self.stored is None else self.stored(num_inverted_steps)

    def network_calls(self, num_steps: int, kind: str = "sample") -> int:
        """Network calls for ``num_steps`` steps walked: ``kind`` is ``"sample"``, ``"invert"`` or ``"reconstruct"``."""
        if kind not in ("sample", "invert", "reconstruct"):
            raise InvalidValueError(f"kind must be 'sample', 'invert' or 'reconstruct', got {kind!r}")
        count = getattr(self.calls, kind)
        if count is None:
            raise InvalidValueError(f"method {self.name!r} has no inverse, so it has no {kind} calls")
        return count(num_steps)

    def steps_for_budget(self, calls: int) -> int:
        """The most steps whose sampling calls fit in ``calls`` network calls."""
        steps = max((n for n in range(1, calls + 1) if self.calls.sample(n) <= calls), default=0)
        if steps < self.min_steps:
            raise InvalidValueError(f"a budget of {calls} network calls is too small for {self.name!r}")
        return steps

    def reconstruction_steps(self, num_inverted_steps: int) -> int:
        """The steps a reconstruction walks from an inversion of ``num_inverted_steps`` steps (its state covers the
        first ``state_span - 1`` of them)."""
        return num_inverted_steps - (self.state_span - 1)

    def check_num_steps(self, num_steps) -> int:
        """``num_steps`` as an int, or a clear error when it is not an integer or below :attr:`min_steps`."""
        try:
            if isinstance(num_steps, bool):
                raise TypeError
            num_steps = operator.index(num_steps)
        except TypeError:
            raise InvalidTypeError(f"num_steps must be an integer, got {num_steps!r}") from None
        if num_steps < self.min_steps:
            why = " (a two-step method: its first step seeds the pair)" if self.min_steps > 1 else ""
            least = self.min_steps
            raise InvalidValueError(f"method {self.name!r} needs at least {least} step{'s' if least > 1 else ''}{why}, "
                                    f"got num_steps={num_steps}")
        return num_steps

    def resolve(self, options: dict, also_allowed=()) -> dict:
        """The method's options with defaults filled in and checked; an error for any key neither an option of this
        method nor in ``also_allowed``."""
        if "lattice" in options and not self.takes_lattice:
            takers = " and ".join(repr(name) for name, m in REGISTRY.items() if m.takes_lattice)
            raise UnknownOptionError(
                f"lattice is an option of {takers} with gamma = 1 only: {self.name!r}'s update multiplies the carried "
                "state by a coefficient other than 1 (EDICT's mixing weight p, O-BELM's step-size ratios), so a state "
                "rounded onto a lattice cannot be recovered exactly")
        allowed = set(self.options) | set(also_allowed)
        unknown = sorted(set(options) - allowed)
        if unknown:
            where = f"method {self.name!r}" if also_allowed else repr(self.name)
            raise UnknownOptionError(f"unknown option(s) {', '.join(unknown)} for {where}; allowed: "
                                     f"{', '.join(sorted(allowed)) or 'none'}")
        resolved: dict = {}
        for key, option in self.options.items():
            resolved[key] = option.check(options.get(key, option.default), resolved)
        return resolved


# ---------------------------------------------------------------------------------------------------
# a-priori rounding amplification of an inversion (see rounding_amplification)


def _log_bound(log_amp: float) -> float:
    return math.exp(log_amp) if log_amp < 709.0 else math.inf


def _bdia_amplification(num_inverted_steps: int, options: dict, levels, variables) -> float:
    gamma = float(options.get("gamma", 1.0))
    if num_inverted_steps <= 1:
        return 1.0
    if gamma == 0:
        return math.inf
    return _log_bound((num_inverted_steps - 1) * -math.log(gamma))


def _edict_amplification(num_inverted_steps: int, options: dict, levels, variables) -> float:
    return _log_bound(num_inverted_steps * -2.0 * math.log(float(options.get("p", P.default))))


def _obelm_amplification(num_inverted_steps: int, options: dict, levels, variables) -> float:
    if levels is None:
        raise InvalidTypeError("O-BELM's bound depends on the grid: pass schedule= and num_steps=")
    scale = [math.hypot(level.alpha, level.sigma) for level in levels]  # t_0 .. t_K
    log_amp = 0.0
    for m in range(1, num_inverted_steps):
        gamma = steps.obelm_gamma(levels[m + 1], levels[m], levels[m - 1], variables)
        log_amp += -math.log(abs(gamma)) - math.log(scale[m + 1] / scale[m - 1])
    return _log_bound(log_amp)


# ---------------------------------------------------------------------------------------------------
# the registry


def _per_step(k: int, offset: int = 0) -> Callable[[int], int]:
    return lambda n: k * n - offset


REGISTRY: dict[str, Method] = {
    "ddim": Method(
        "ddim", "DDIM (paper eq. 6); its inversion is eq. 10, approximate",
        sample=loops.sample_ddim, invert=loops.invert_ddim,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1))),
    "edict": Method(
        "edict", "EDICT (Wallace et al. 2023, eqs. 11-18): two coupled sequences, exact",
        sample=loops.sample_edict, invert=loops.invert_edict,
        calls=Calls(sample=_per_step(2), invert=_per_step(2), reconstruct=_per_step(2)),
        options={"p": P, "leapfrog": LEAPFROG}, state=("x_K", "y_K"), exact=True, limits_x0=False,
        amplification=_edict_amplification),
    "bdia": Method(
        "bdia", "BDIA-DDIM (paper eqs. 26 and 29): time-symmetric two-step rule, exact for gamma > 0",
        sample=loops.sample_bdia, invert=loops.invert_bdia,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1, 1)),
        options={"gamma": GAMMA, "tolerance": TOLERANCE, "lattice": LATTICE}, min_steps=2, state=("z_K", "z_{K-1}"),
        state_span=2, exact=True, takes_lattice=True, warns_a_priori=True, amplification=_bdia_amplification,
        choose_gamma=auto_gamma),
    "obelm": Method(
        "obelm", "O-BELM (Wang et al. 2024): exact, second order; BDIA with a step-dependent gamma",
        sample=loops.sample_obelm, invert=loops.invert_obelm,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1, 1)),
        min_steps=2, state=("z_K", "z_{K-1}"), state_span=2, exact=True, amplification=_obelm_amplification),
    "heun": Method(
        "heun", "EDM's Heun sampler (Karras et al. 2022, Alg. 1); no inverse",
        sample=loops.sample_heun, invert=None, calls=Calls(sample=_per_step(2, 1)), family="edm", limits_x0=False),
    "bdia-edm": Method(
        "bdia-edm", "BDIA-EDM (this project's definition): Heun forward, Euler backward, exact for gamma > 0",
        sample=loops.sample_bdia_edm, invert=loops.invert_bdia_edm,
        calls=Calls(sample=_per_step(2, 1), invert=_per_step(2, 2), reconstruct=_per_step(2, 3)),
        options={"gamma": GAMMA, "tolerance": TOLERANCE, "lattice": LATTICE}, min_steps=2, state=("z_K", "z_{K-1}"),
        state_span=2, exact=True, takes_lattice=True, lattice_needs_alpha_one=True, family="edm", limits_x0=False,
        warns_a_priori=True, amplification=_bdia_amplification, choose_gamma=auto_gamma),
    "midpoint": Method(
        "midpoint", "RF-Solver's second-order step (Wang et al. 2024), the midpoint rule: 2 calls per step, "
        "approximate inversion", sample=loops.sample_midpoint, invert=loops.invert_midpoint,
        calls=Calls(sample=_per_step(2), invert=_per_step(2), reconstruct=_per_step(2)), family="flow",
        limits_x0=False, schedules=(FlowMatchSchedule,)),
    "fireflow": Method(
        "fireflow", "FireFlow (Deng et al. 2024): the midpoint rule reusing the previous midpoint velocity, N + 1 "
        "calls, approximate inversion", sample=loops.sample_fireflow, invert=loops.invert_fireflow,
        calls=Calls(sample=_per_step(1, -1), invert=_per_step(1, -1), reconstruct=_per_step(1, -1)), family="flow",
        limits_x0=False, schedules=(FlowMatchSchedule,)),
    "null-text": Method(
        "null-text", "null-text inversion (Mokady et al. 2023): DDIM inversion at guidance 1, then each step's "
        "unconditional embedding optimised to follow it; approximate", sample=loops.sample_with_null_embeddings,
        invert=loops.invert_null_text,
        calls=Calls(sample=_per_step(1), invert=lambda n: n + n * (INNER_STEPS.default + 2),
                    reconstruct=_per_step(1)),
        options={"inner_steps": INNER_STEPS, "lr": LR, "early_stop": EARLY_STOP,
                 "early_stop_growth": EARLY_STOP_GROWTH}, limits_x0=False,
        needs_guided_model=True, invert_calls_at_most=True),
    "negative-prompt": Method(
        "negative-prompt", "negative-prompt inversion (Miyake et al. 2023): DDIM inversion at guidance 1, the source "
        "prompt as the negative prompt when regenerating; approximate", sample=loops.sample_with_null_embeddings,
        invert=loops.invert_negative_prompt, calls=Calls(sample=_per_step(1), invert=_per_step(1),
                                                         reconstruct=_per_step(1)),
        limits_x0=False, needs_guided_model=True),
    "ddpm-inversion": Method(
        "ddpm-inversion", "edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024): noisy versions drawn "
        "independently per timestep and the noise map of each DDPM step stored; exact by construction, stochastic",
        sample=loops.sample_ddpm, invert=loops.invert_ddpm,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1)),
        options={"seed": SEED}, state=("z_K",), exact=True, stored=lambda k: k + 1, schedules=(VPSchedule,),
        schedules_why="DDPM's posterior step is written for a variance-preserving schedule"),
    "rf-inversion": Method(
        "rf-inversion", "RF-Inversion (Rout et al. 2025): Euler steps of a rectified flow with a controller, toward "
        "a fixed noise sample when inverting and toward the source image for the first steps of an edit; approximate",
        sample=loops.sample_rf, invert=loops.invert_rf,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1)),
        options={"controller": CONTROLLER, "eta": ETA, "start": START, "stop": STOP, "seed": SEED},
        stored=lambda k: 2, family="flow", limits_x0=False, schedules=(FlowMatchSchedule,),
        schedules_why="its controllers follow the straight lines of a rectified flow",
        regeneration_options=("eta", "start", "stop")),
    "direct-inversion": Method(
        "direct-inversion", "Direct Inversion (Ju et al. 2024): DDIM inversion keeping its trajectory; the source "
        "branch is pinned to it after every step, so it regenerates the source exactly, and the edit beside it is "
        "DDIM's, steered by a control that reads the source branch (alone, every row is the source)",
        sample=loops.sample_direct, invert=loops.invert_direct,
        calls=Calls(sample=_per_step(1), invert=_per_step(1), reconstruct=_per_step(1)),
        state=("z_K",), exact=True, stored=lambda k: k + 1, edits_alone=False),
    "flowedit": Method(
        "flowedit", "FlowEdit (Kulikov et al. 2025): no inversion; the edit starts at the source image and "
        "integrates the difference of the target's and the source's velocities at noisy versions of the source (fresh "
        "noise every step), two velocity calls per step (one per branch)",
        sample=loops.sample_flowedit, invert=loops.invert_flowedit,
        calls=Calls(sample=_per_step(2), invert=_per_step(0), reconstruct=_per_step(2)),
        options={"seed": SEED}, state=("x_src",), family="flow", limits_x0=False, schedules=(FlowMatchSchedule,),
        schedules_why="it noises the source along the straight lines of a rectified flow",
        edits_beside_source=True),
}

#: every method's name, in the registry's order
METHODS = tuple(REGISTRY)
#: the methods with an inverse
INVERTIBLE_METHODS = tuple(name for name, m in REGISTRY.items() if m.invertible)


def get_method(name) -> Method:
    """The :class:`Method` called ``name``; an error that lists the valid names otherwise."""
    if name not in REGISTRY:
        raise InvalidValueError(f"unknown method {name!r}; valid methods: {', '.join(repr(m) for m in METHODS)}")
    return REGISTRY[name]


def method_defaults(method: str) -> dict[str, Any]:
    """The default options of ``method`` (a copy)."""
    return {key: option.default for key, option in get_method(method).options.items()}


def rounding_amplification(method: str, num_inverted_steps: int, schedule=None, num_steps: int | None = None,
                           **options) -> float:
    """A priori bound on how much an inversion of ``num_inverted_steps`` steps can amplify rounding errors.

    The product, over the inverse steps, of the coefficient that multiplies the carried state, relative to the
    growth of the noise scale ``sqrt(alpha^2 + sigma^2)`` (computed in log space; ``inf`` beyond float range):

    * ``bdia``, ``bdia-edm``: ``(1/gamma)^(K-1)``; BDIA's DDIM seed step excites this mode, and the bound is
      reached (chapter 1 measures a growth of 1.99 per step at gamma = 0.5);
    * ``obelm``: ``prod |1/gamma_i|`` of its step-dependent gamma (:func:`bdia.steps.obelm_gamma`) on the run's grid
      (needs ``schedule`` and ``num_steps``); about 1e9 on a 5-step Karras grid, where the measured growth of
      its states stays below 10;
    * ``edict``: ``(1/p^2)^K``, the inverse mixing's second eigenvalue; its coupled half-steps keep the measured
      growth far below it;
    * ``ddim``: 1.

    Since EDICT and O-BELM stay far below their bounds, :func:`bdia.invert` warns a priori for BDIA only and checks
    every method's measured growth (``InversionState.noise_stats``) afterwards.
    """
    record = get_method(method)
    levels, variables = None, edm_variables
    if schedule is not None and num_steps is not None:
        grid = schedule.timesteps(num_steps)
        levels = [schedule.level(float(t)) for t in grid[len(grid) - 1 - num_inverted_steps:].flip(0)]
        variables = schedule.euler_variables
    return record.amplification(num_inverted_steps, options, levels, variables)


# ---------------------------------------------------------------------------------------------------
# method specifications: a method and its options, as the command line and the chapters name them


@dataclass(frozen=True)
class MethodSpec:
    """A method and its options, e.g. ``MethodSpec("bdia", {"gamma": 0.96})``; see :meth:`parse`."""

    method: str
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        get_method(self.method).resolve(self.options)

    @property
    def record(self) -> Method:
        """The method's :class:`Method` in the registry."""
        return REGISTRY[self.method]

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        """``"bdia"``, ``"bdia:gamma=0.5"``, ``"edict:p=0.9,leapfrog=false"``."""
        name, _, rest = text.strip().partition(":")
        options = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise InvalidValueError(f"option {item!r} in {text!r} is not of the form key=value")
            value = value.strip()
            if value.lower() in ("true", "false"):
                options[key.strip()] = value.lower() == "true"
            else:
                try:
                    options[key.strip()] = float(value)
                except ValueError:
                    options[key.strip()] = value  # a word (gamma=auto): the option's own check decides
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


def parse_methods(texts) -> list[MethodSpec]:
    """A list of :class:`MethodSpec` from strings (or a space/semicolon separated string)."""
    if isinstance(texts, str):
        texts = texts.replace(";", " ").split()
    return [t if isinstance(t, MethodSpec) else MethodSpec.parse(t) for t in texts]
