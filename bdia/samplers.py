"""Trajectory drivers: :func:`sample` and :func:`invert` for every method of :data:`bdia.methods.REGISTRY`.

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

``heun`` samples only (it has no exact inverse). The drivers check what they are given, pick the
method's loop from the registry and run it on a :class:`~bdia.trajectory.Trajectory`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import InvalidTypeError, InvalidValueError
from .exactness import warn_amplified, warn_grown, warn_half_precision, warn_nondeterministic
from .lattice import MANTISSA_BITS, resolve_lattice
from .methods import AUTO, INVERTIBLE_METHODS, REGISTRY, Method, get_method, rounding_amplification
from .predictions import prediction_config
from .schedules import Schedule
from .steps import lattice_round
from .trajectory import Trajectory, expected_rms, rms

__all__ = ["sample", "invert", "InversionState", "RUN_OPTIONS", "inverted_steps", "runs_on", "GUIDED_MODEL_METHODS"]

#: options of every run (besides the method's own): a progress bar, a callback, the trajectory returned
RUN_OPTIONS = ("progress", "callback", "return_trajectory")


@dataclass(frozen=True)
class InversionState:
    """What :func:`invert` hands to :func:`sample` for reconstruction or editing.

    ``latents`` holds the noisy end of the inverted trajectory: ``(z_N, z_{N-1})`` for ``bdia``,
    ``obelm`` and ``bdia-edm``, the coupled pair ``(x_N, y_N)`` for ``edict``, ``(z_N,)`` for ``ddim``
    (the method's ``state`` in the registry). ``timesteps`` is the part of the grid that was traversed,
    ``[t_K, ..., t_0]`` (``K = N`` unless ``strength < 1``). ``noise_stats`` compares the inverted states with
    the noise level of their timesteps: ``ratio`` is the rms of ``z_K`` over the rms expected at ``t_K`` for
    data of this rms (``sqrt(alpha^2 rms(x0)^2 + sigma^2)``), ``peak_ratio`` the largest such ratio along the
    trajectory, ``amplification_bound`` the a-priori bound of :func:`bdia.rounding_amplification`, and with a
    lattice ``input_moved`` the largest change that rounding the input onto it made.
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
    #: what a method keeps beyond its latents: null-text's per-step unconditional embeddings (``null_embeddings``,
    #: in sampling order) and its optimisation's network passes (``forward_passes``, ``backward_passes``)
    extras: dict = field(default_factory=dict)

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

    @property
    def nbytes(self) -> int:
        """The bytes this state keeps for reconstruction: its latents and the tensors of its extras (null-text's
        embeddings, edit-friendly DDPM inversion's noise maps, Direct Inversion's trajectory)."""
        def size(value) -> int:
            if torch.is_tensor(value):
                return value.numel() * value.element_size()
            if isinstance(value, (tuple, list)):
                return sum(size(v) for v in value)
            return 0

        return size(self.latents) + sum(size(value) for value in self.extras.values())

    def tile(self, copies: int) -> "InversionState":
        """This state ``copies`` times along the batch: its latents and what it keeps per sample (null-text's
        embeddings, DDPM inversion's noise maps, Direct Inversion's trajectory), so that one run regenerates the
        source beside its edits; ``extras["copies"]`` says how many (the source is the first of them)."""
        batch = self.shape[0]

        def tiled(value):
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == batch:
                return value.repeat(copies, *([1] * (value.dim() - 1)))
            if isinstance(value, (tuple, list)):
                return type(value)(tiled(v) for v in value)
            return value

        extras = {key: tiled(value) for key, value in self.extras.items()}
        extras["copies"] = self.extras.get("copies", 1) * copies  # the first 1/copies of the rows: the source
        return dataclasses.replace(self, latents=tiled(self.latents), shape=(), extras=extras)


# ---------------------------------------------------------------------------------------------------
# checks


def inverted_steps(strength: float, num_steps: int) -> int:
    """The steps an inversion of ``strength`` walks on a grid of ``num_steps``: ``int(strength * num_steps)``, the
    convention of diffusers' img2img pipelines and the EDICT reference code (so a strength means the same grid)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise InvalidTypeError(f"strength must be a number in (0, 1], got {strength!r}")
    if not 0.0 < float(strength) <= 1.0:
        raise InvalidValueError(f"strength must be in (0, 1], got {float(strength)}")
    return min(int(float(strength) * operator.index(num_steps)), num_steps)


def _check_tensor(name: str, z) -> Tensor:
    if not torch.is_tensor(z):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise InvalidTypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.dim() == 0:
        raise InvalidValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if z.shape[0] == 0 or z.numel() == 0:
        raise InvalidValueError(f"{name} is empty (shape {tuple(z.shape)}): give at least one sample")
    if not torch.isfinite(z).all():
        raise InvalidValueError(f"{name} contains non-finite values (nan or inf)")
    return z


def _check_schedule(schedule) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise InvalidTypeError(f"schedule must be a bdia Schedule (VPSchedule, EDMSchedule), got "
                               f"{type(schedule).__name__}")
    return schedule


def _grid(schedule: Schedule, num_steps: int, intervals: int) -> Tensor:
    ts = _check_schedule(schedule).timesteps(num_steps)
    return ts[len(ts) - 1 - intervals:]


def _levels_tensor(schedule: Schedule, ts: Tensor) -> Tensor:
    return torch.tensor([tuple(schedule.level(t)) for t in ts], dtype=torch.float64)


def _split_options(record: Method, options: dict, inverting: bool) -> tuple[dict, dict]:
    """The method's options (checked, defaults filled in) and the run's options."""
    run_keys = RUN_OPTIONS + (("strength",) if inverting else ())
    method_opts = record.resolve({k: v for k, v in options.items() if k not in run_keys}, run_keys)
    run_opts = {k: options[k] for k in options if k in run_keys}
    callback = run_opts.get("callback")
    if callback is not None and not callable(callback):
        raise InvalidTypeError("callback must be callable as callback(step_index, t, state)")
    return method_opts, run_opts


def _check_schedule_for(record: Method, schedule: Schedule, num_steps: int) -> None:
    if record.schedules and not isinstance(schedule, record.schedules):
        names = ", ".join(cls.__name__ for cls in record.schedules)
        why = record.schedules_why or "it evaluates the network at the data end, which is a valid time there"
        raise InvalidValueError(f"{record.name!r} runs on {names} only ({why}), not on {type(schedule).__name__}")
    if record.family == "edm" and any(schedule.level(float(t)).alpha == 0 for t in schedule.timesteps(num_steps)):
        raise InvalidValueError(f"{record.name!r} integrates in EDM space, x = z / alpha, which is infinite where "
                                "alpha = 0 (a rectified flow's t = 1, or zero terminal SNR) on this grid; use a "
                                "DDIM-family method (bdia, obelm, edict, ddim) there")


#: what a model offers for the methods that replace its unconditional embedding
GUIDED_MODEL_METHODS = ("conditional", "unconditional", "guided", "null_embedding", "conditional_embedding")


def _missing_branches(model) -> list[str]:
    return [name for name in GUIDED_MODEL_METHODS if not callable(getattr(model, name, None))]


def runs_on(method: str, model, schedule: Schedule) -> bool:
    """Whether ``method`` can run with ``model`` on ``schedule``: the schedule family it is written for, and the
    branches of a classifier-free-guided model where it replaces the unconditional embedding (null-text,
    negative-prompt inversion). :func:`sample` and :func:`invert` refuse the combinations this rejects."""
    record = get_method(method)
    if record.schedules and not isinstance(schedule, record.schedules):
        return False
    return not (record.needs_guided_model and _missing_branches(model))


def _check_guided_model(record: Method, model) -> None:
    if not record.needs_guided_model:
        return
    missing = _missing_branches(model)
    if missing:
        raise InvalidTypeError(
            f"{record.name!r} replaces the unconditional embedding of a classifier-free-guided model: give a "
            "bdia.diffusers.UNetEpsModel (with null_class) or StableDiffusionEpsModel, or a model with "
            f"{', '.join(GUIDED_MODEL_METHODS)} (this one lacks {', '.join(missing)})")


def _check_prediction(record: Method, model) -> None:
    if prediction_config(model).limits_x0 and not record.limits_x0:
        able = ", ".join(repr(name) for name, m in REGISTRY.items() if m.limits_x0)
        raise InvalidValueError(
            f"{record.name!r} cannot use a model whose x0 prediction is clipped or thresholded (EDICT's half-steps "
            "would pass the state they transform through the clip and lose their inverse; EDM's samplers integrate "
            f"eps); use {able}, or a model without clipping (clip_sample=False, thresholding=False)")


def _lattice_for(record: Method, method_opts: dict, dtype: torch.dtype, schedule: Schedule, num_steps: int):
    """The lattice spacing a run uses (None without one); checks what the lattice needs of the schedule and dtype."""
    lattice = method_opts.get("lattice")
    if lattice is not None and record.lattice_needs_alpha_one:
        alphas = {round(lvl.alpha, 15) for lvl in (schedule.level(float(t)) for t in schedule.timesteps(num_steps))}
        if alphas != {1.0}:
            raise InvalidValueError(
                f"{record.name}'s lattice needs a schedule with alpha = 1 (EDMSchedule): its leapfrog form holds for "
                "x = z / alpha, and dividing by alpha is not exact; use method='bdia' on this schedule")
    return resolve_lattice(lattice, dtype, schedule, num_steps)


def _trajectory(model, record: Method, direction: str, ts: Tensor, schedule: Schedule, run_opts: dict,
                lattice: float | None, data_rms: float | None = None, gamma: float | None = None) -> Trajectory:
    label = f"{record.name} γ={gamma:g}" if isinstance(gamma, float) else None  # which gamma runs ('auto' chose it)
    return Trajectory(model, record.name, direction, ts, schedule, progress=bool(run_opts.get("progress")),
                      callback=run_opts.get("callback"), keep_states=bool(run_opts.get("return_trajectory")),
                      lattice=lattice, data_rms=data_rms, label=label)


def _finish(result, traj: Trajectory):
    return (result, traj.states) if traj.states is not None else result


# ---------------------------------------------------------------------------------------------------
# the drivers


@torch.no_grad()
def invert(model, x0: Tensor, schedule: Schedule, num_steps: int, method: str = "bdia", **options):
    """Run the trajectory of ``method`` from data ``x0`` up to noise; returns an :class:`InversionState`.

    Options: ``gamma`` (``bdia``, ``bdia-edm``; in (0, 1], default 1.0), ``lattice`` (``bdia``, ``bdia-edm`` with
    ``gamma = 1``: ``True`` or a spacing ``2**-k``; see below), ``p`` and ``leapfrog`` (``edict``; defaults 0.93
    and True), ``strength`` (the fraction of the ``num_steps`` grid to invert, from the data end: ``int(strength *
    num_steps)`` steps, as in diffusers; default 1.0), ``progress`` (a tqdm bar), ``callback(step_index, t, state)``,
    ``return_trajectory`` (then ``(state, [z_{t_0}, ..., z_{t_K}])`` is returned). The model's
    ``prediction`` attribute (:class:`~bdia.predictions.PredictionConfig`) says what it returns and how ``x0`` is
    clipped; a plain callable returns eps.

    ``sample(model, state, schedule, num_steps, method)`` then returns ``x0`` up to rounding for the exact
    methods (``edict``, ``bdia``, ``obelm``, ``bdia-edm``); ``ddim`` is the classic approximate inversion.

    **Bit-exact inversion.** With ``lattice``, BDIA (gamma = 1) keeps every state on the lattice of multiples
    of ``2^-k`` and rounds each increment ``g_i`` onto it before adding it; sums of such numbers are exact, so
    reconstruction retraces the inversion bit for bit and returns the input *rounded onto the lattice*
    (``noise_stats["input_moved"]`` says how far that moved it) exactly, whatever the network's precision,
    provided the network returns the same output for the same input bits (same batch; on a GPU,
    ``torch.use_deterministic_algorithms(True)``). ``lattice=True`` picks ``k`` from the dtype
    (:func:`bdia.default_lattice`); a state outside the exact range stops the run with an error. BDIA-EDM takes
    the lattice on schedules with ``alpha = 1`` (EDM's), where its carried state is ``x = z``.

    Warnings (:class:`~bdia.ExactnessWarning`): half-precision states; a BDIA bound ``(1/gamma)^(K-1)`` above 1e3;
    and, for every method, states that grew to more than 1e3 times the noise level of their timestep.
    """
    record = get_method(method)
    if not record.invertible:
        raise InvalidValueError(f"method {method!r} has no inverse; invertible methods: "
                                f"{', '.join(repr(m) for m in INVERTIBLE_METHODS)} ('bdia-edm' is the exact EDM-style "
                                "one)")
    method_opts, run_opts = _split_options(record, options, inverting=True)
    num_steps = record.check_num_steps(num_steps)
    x0 = _check_tensor("x0", x0)
    schedule = _check_schedule(schedule)
    _check_schedule_for(record, schedule, num_steps)
    _check_prediction(record, model)
    _check_guided_model(record, model)
    strength = run_opts.pop("strength", 1.0)
    intervals = inverted_steps(strength, num_steps)
    if intervals < record.min_steps:
        raise InvalidValueError(f"strength={strength} of {num_steps} steps inverts {intervals} step(s); "
                                f"method {method!r} needs at least {record.min_steps}")
    if method_opts.get("gamma") == 0.0:
        raise InvalidValueError("inversion needs gamma > 0: the inverse update divides by gamma (gamma = 0 is plain "
                                "DDIM, which has no exact inverse); use gamma in (0, 1], e.g. 1.0 or 0.96")
    tolerance = method_opts.pop("tolerance", None)
    chosen = method_opts.get("gamma") == AUTO
    if chosen:
        net_dtype = getattr(model, "network_dtype", None)
        method_opts["gamma"] = record.choose_gamma(intervals, x0.dtype, net_dtype, tolerance, x0.numel())
    bound = rounding_amplification(method, intervals, schedule=schedule, num_steps=num_steps, **method_opts)
    # an automatic gamma was chosen to keep within its tolerance: no a-priori warning for its own choice
    warned = record.warns_a_priori and not chosen and warn_amplified(method, method_opts["gamma"], intervals, bound,
                                                                     stacklevel=3)
    if record.exact:
        warn_half_precision(x0.dtype, stacklevel=3)
    ts = _grid(schedule, num_steps, intervals).flip(0)
    lattice = _lattice_for(record, method_opts, x0.dtype, schedule, num_steps)
    moved = None
    if lattice is not None:
        warn_nondeterministic(x0, stacklevel=3)
        on_lattice = lattice_round(x0, lattice)
        moved = float((on_lattice - x0).abs().max())
        x0 = on_lattice
    traj = _trajectory(model, record, "inversion", ts, schedule, run_opts, lattice, data_rms=rms(x0),
                       gamma=method_opts.get("gamma"))
    traj.start(x0)
    with traj:
        latents = record.invert(traj, x0, method_opts)
    grid = ts.flip(0)
    expected = expected_rms(schedule.level(float(grid[0])), traj.data_rms)
    noise_stats = {"latent_rms": rms(latents[0]), "expected_rms": expected, "ratio": rms(latents[0]) / expected,
                   "peak_ratio": traj.peak_ratio, "amplification_bound": bound, "input_rms": traj.data_rms}
    if moved is not None:
        noise_stats["input_moved"] = moved
    if chosen:
        noise_stats["auto_gamma"] = {"gamma": method_opts["gamma"], "tolerance": tolerance,
                                     "network_dtype": str(net_dtype or x0.dtype).removeprefix("torch."),
                                     "latents_dtype": str(x0.dtype).removeprefix("torch.")}
    if not warned:
        warn_grown(method, traj.peak_ratio, x0.dtype, stacklevel=3, tolerance=tolerance)
    options_record = {**method_opts, **({"lattice": lattice} if lattice is not None else {})}
    state = InversionState(method, num_steps, options_record, grid, tuple(latents),
                           levels=_levels_tensor(schedule, grid), noise_stats=noise_stats, extras=dict(traj.extras))
    return _finish(state, traj)


@torch.no_grad()
def sample(model, init, schedule: Schedule, num_steps: int, method: str = "bdia", *, control=None, **options):
    """Run ``method`` from ``init`` down to data and return the final sample.

    ``init`` is either the noise state ``z_{t_N}`` (fresh sampling; scale standard normal noise by
    ``schedule.init_noise_sigma(num_steps)``) or an :class:`InversionState` from :func:`invert`
    (reconstruction, or editing with another model). Options as in :func:`invert` (``gamma``
    may be 0 here: BDIA with ``gamma = 0`` is DDIM). With ``return_trajectory`` the result is
    ``(z_{t_0}, [z_{t_N}, ..., z_{t_0}])``.

    Network calls from noise: N for ``ddim``, ``bdia``, ``obelm``; 2N for ``edict``; 2N - 1 for ``heun``
    and ``bdia-edm`` (``REGISTRY[method].network_calls``).

    **Controlled edits.** With ``control`` (e.g. :class:`bdia.diffusers.controls.FeatureInjection` or
    ``PromptToPrompt``) the run carries two branches of ``init`` in one batch: the first half regenerates the
    source, the second is the edit, which takes the source branch's features or attention maps inside the network
    for the first part of the steps. ``model`` then conditions the first half on the source and the second on the
    target (a :class:`~bdia.diffusers.UNetEpsModel` with labels ``[sources, targets]``, a guidance per sample if
    they differ); the result is that batch, source branch first. Every method runs so, unchanged: the control acts
    on the network (``control.bind(model, timesteps, batch)``), not on the sampler.
    """
    record = get_method(method)
    num_steps = record.check_num_steps(num_steps)
    batch = None
    if control is not None:
        if not callable(getattr(control, "bind", None)):
            raise InvalidTypeError(f"control must be a bdia.diffusers.controls control (FeatureInjection, "
                                   f"PromptToPrompt), got {type(control).__name__}")
        if isinstance(init, InversionState):
            batch, init = init.shape[0], init.tile(2)
        else:
            init = _check_tensor("init", init)
            batch, init = init.shape[0], torch.cat([init, init])
    if isinstance(init, InversionState):
        if init.method != method:
            raise InvalidValueError(f"method mismatch: this inversion state was made by {init.method!r}, not "
                                    f"{method!r}; reconstruct with method={init.method!r}")
        if isinstance(options.get("gamma"), str) and "gamma" in init.options:
            # 'auto': the gamma the inversion chose (its tolerance was spent choosing it)
            options = {k: v for k, v in options.items() if k != "tolerance"} | {"gamma": init.options["gamma"]}
        method_opts, run_opts = _split_options(record, {**init.options, **options}, inverting=False)
        explicit = {k: method_opts[k] for k in options if k in method_opts}
        ts = _check_state(init, record, num_steps, explicit, schedule)
        latents = init.latents
    else:
        if record.edits_beside_source:
            raise InvalidValueError(f"{method!r} edits a source image and has no sampler from noise: pass the state "
                                    f"of bdia.invert(model, x0, schedule, num_steps, {method!r}) (the source itself), "
                                    "tiled twice with the model conditioned on the source, then the target, to edit")
        method_opts, run_opts = _split_options(record, options, inverting=False)
        if method_opts.get("gamma") == AUTO:
            raise InvalidValueError("gamma='auto' chooses the gamma of an inversion (from its steps and precision); "
                                    "sampling from noise needs a number, e.g. gamma=0.5 (the paper's 10-step setting)")
        latents = (_check_tensor("init", init),)
        ts = _grid(schedule, num_steps, num_steps)
    _check_schedule_for(record, schedule, num_steps)
    _check_prediction(record, model)
    _check_guided_model(record, model)
    lattice = _lattice_for(record, method_opts, latents[0].dtype, schedule, num_steps)
    if lattice is not None:
        warn_nondeterministic(latents[0], stacklevel=3)
        if isinstance(init, InversionState):
            if init.options.get("lattice") != lattice or any(not torch.equal(lattice_round(z, lattice), z)
                                                             for z in latents):
                raise InvalidValueError(f"this state is not on the lattice {lattice:g}: reconstruct with the lattice "
                                        f"its inversion used ({init.options.get('lattice')!r}), from the state it "
                                        "returned")
        else:
            latents = (lattice_round(latents[0], lattice),)
    with contextlib.nullcontext(model) if control is None else control.bind(model, ts, batch) as model:
        traj = _trajectory(model, record, "sampling", ts, schedule, run_opts, lattice, gamma=method_opts.get("gamma"))
        if isinstance(init, InversionState):
            traj.extras = dict(init.extras)
        traj.start(latents[0])
        if len(latents) == 2 and record.state_span == 2:
            traj.start(latents[1])  # the pair covers t_K and t_{K-1}
        with traj:
            result = record.sample(traj, latents, method_opts)
    return _finish(result, traj)


def _check_state(state: InversionState, record: Method, num_steps: int, explicit: dict, schedule: Schedule) -> Tensor:
    """The traversed grid, after checking that ``state`` can be reconstructed with these settings."""
    if state.num_steps != num_steps:
        raise InvalidValueError(f"step count mismatch: this inversion state was made with num_steps={state.num_steps}, "
                                f"not {num_steps}")
    for key, value in explicit.items():
        if key == "lattice" and state.latents and state.dtype in MANTISSA_BITS:
            # compare what the request resolves to for this state (lattice=True is the spacing the inversion chose)
            value = resolve_lattice(value, state.dtype, schedule, num_steps)
        if key in state.options and state.options[key] != value and key not in record.regeneration_options:
            raise InvalidValueError(f"option mismatch: the state was inverted with {key}={state.options[key]!r}, "
                                    f"reconstruction asked for {key}={value!r}")
    if len(state.latents) != len(record.state):
        raise InvalidValueError(f"a {record.name!r} inversion state holds {len(record.state)} latent(s), this one holds "
                                f"{len(state.latents)}")
    for k, z in enumerate(state.latents):
        _check_tensor(f"state.latents[{k}]", z)
        if tuple(z.shape) != tuple(state.shape):
            raise InvalidValueError(f"shape mismatch: state.latents[{k}] has shape {tuple(z.shape)}, the state was "
                                    f"inverted with shape {tuple(state.shape)}")
        if z.dtype != state.latents[0].dtype or z.device != state.latents[0].device:
            raise InvalidValueError("the latents of an inversion state must share dtype and device")
    ts = _grid(schedule, num_steps, state.num_inverted_steps)
    if ts.shape != state.timesteps.shape or not torch.equal(ts, state.timesteps.to(ts)):
        raise InvalidValueError("schedule mismatch: the state was inverted on the timesteps "
                                f"{[round(float(t), 4) for t in state.timesteps]}, this schedule and num_steps give "
                                f"{[round(float(t), 4) for t in ts]}")
    if state.levels is not None and not torch.equal(_levels_tensor(schedule, ts), state.levels):
        raise InvalidValueError("schedule mismatch: same timesteps, but this schedule's noise levels (alpha, sigma) "
                                "differ from those the state was inverted with")
    return ts
