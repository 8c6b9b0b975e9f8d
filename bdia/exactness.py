"""When a round trip cannot be exact, and the warnings that say so (:class:`ExactnessWarning`).

Every sampler, scheduler and pipeline of bdia warns through these functions, so that one situation
always gives one message:

* :func:`warn_half_precision`: states in float16 or bfloat16 (their rounding dominates);
* :func:`warn_amplified`: an a-priori rounding amplification above :data:`AMPLIFICATION_WARN`
  (BDIA's ``(1/gamma)^(K-1)``);
* :func:`warn_grown`: inverted states that grew far beyond the noise level of their timesteps;
* :func:`warn_lower_precision_output`: a model that returns a lower precision than its states;
* :func:`warn_lower_precision_resume`: an inversion continued in a lower precision than it was made in;
* :func:`warn_nondeterministic`: a lattice round trip on a GPU without deterministic kernels;

and the rule that avoids them for BDIA: :func:`auto_gamma`, the smallest gamma whose inversion stays exact within a
tolerance (``gamma="auto"``).
"""

from __future__ import annotations

import math
import operator
import warnings

import torch

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["ExactnessWarning", "AMPLIFICATION_WARN", "warn_half_precision", "warn_amplified", "warn_grown",
           "warn_lower_precision_output", "warn_lower_precision_resume", "warn_nondeterministic",
           "nondeterministic_kernels", "auto_gamma", "DEFAULT_TOLERANCE", "FLIP_BUDGET"]

#: the round-trip error (relative) that ``gamma="auto"`` keeps within unless told otherwise
DEFAULT_TOLERANCE = 1e-6
#: the a-priori expected number of network inputs that a reconstruction may feed a lower-precision network with
#: other bits than its inversion did: one such flip cascades into the network's own rounding (see :func:`auto_gamma`)
FLIP_BUDGET = 0.1

#: an inversion whose rounding amplification (a priori, or measured as the growth of its states over their
#: noise level) exceeds this gets an :class:`ExactnessWarning`
AMPLIFICATION_WARN = 1e3

_HALF = (torch.float16, torch.bfloat16)


class ExactnessWarning(UserWarning):
    """The requested inversion will not round-trip exactly (low precision, or rounding amplified by 1/gamma)."""


def _warn(message: str, stacklevel: int) -> None:
    warnings.warn(message, ExactnessWarning, stacklevel=stacklevel + 1)


def warn_half_precision(dtype: torch.dtype, stacklevel: int = 2) -> bool:
    """Warn (and return True) when inverting ``dtype`` states cannot be exact: float16 and bfloat16."""
    if dtype not in _HALF:
        return False
    _warn(f"inversion in {dtype} is not exact: rounding errors of half precision dominate; use float32 or float64 "
          "latents for exact round trips", stacklevel + 1)
    return True


def warn_amplified(method: str, gamma: float, num_inverted_steps: int, bound: float, stacklevel: int = 2) -> bool:
    """Warn (and return True) when BDIA's a-priori amplification ``(1/gamma)^(K-1)`` exceeds the threshold."""
    if bound <= AMPLIFICATION_WARN:
        return False
    _warn(f"{method} inversion with gamma={gamma} over {num_inverted_steps} steps amplifies rounding errors by "
          f"about (1/gamma)^(N-1) = {bound:.3g}: the round trip will not be exact. Use gamma closer to 1 or fewer "
          "steps.", stacklevel + 1)
    return True


def warn_grown(method: str, peak_ratio: float, dtype: torch.dtype, stacklevel: int = 2,
               tolerance: float | None = None) -> bool:
    """Warn (and return True) when an inversion's states grew beyond the threshold over their noise level, or, for a
    gamma chosen to keep within ``tolerance`` (``gamma="auto"``), when the rounding floor they imply exceeds it."""
    floor = torch.finfo(dtype).eps * peak_ratio
    if (peak_ratio <= AMPLIFICATION_WARN) if tolerance is None else (floor <= tolerance):
        return False
    _warn(f"the {method} inversion's states grew to {peak_ratio:.3g} times the noise level of their timesteps: "
          f"rounding at that scale limits the round trip to about {floor:.1e} (relative), and edits from this "
          "latent start far from noise", stacklevel + 1)
    return True


def warn_lower_precision_output(output_dtype: torch.dtype, state_dtype: torch.dtype, stacklevel: int = 2) -> bool:
    """Warn (and return True) when a model returns a coarser dtype than the states it was given."""
    if torch.finfo(output_dtype).eps <= torch.finfo(state_dtype).eps:
        return False
    _warn(f"the model returned {output_dtype} eps for {state_dtype} states: the round trip is exact only where the "
          "network is fed the same input bits in both directions (see bdia.experiments.compare_network_inputs), else "
          "to the model's precision", stacklevel + 1)
    return True


def warn_lower_precision_resume(state_dtype: torch.dtype, dtype: torch.dtype, advice: str,
                                stacklevel: int = 2) -> bool:
    """Warn (and return True) when an inversion made in ``state_dtype`` is continued in the coarser ``dtype``."""
    if torch.finfo(dtype).eps <= torch.finfo(state_dtype).eps:
        return False
    _warn(f"resuming a {state_dtype} inversion with {dtype} latents: the round trip is exact only to {dtype} "
          f"rounding; {advice}", stacklevel + 1)
    return True


def nondeterministic_kernels(z: torch.Tensor) -> bool:
    """Whether a network may return different outputs for the same input bits: CUDA without deterministic
    algorithms."""
    return z.is_cuda and not torch.are_deterministic_algorithms_enabled()


def warn_nondeterministic(z: torch.Tensor, stacklevel: int = 2) -> bool:
    """Warn (and return True) when a lattice round trip runs on CUDA without deterministic algorithms."""
    if not nondeterministic_kernels(z):
        return False
    _warn("bit-exact inversion on the lattice needs a network that returns the same output for the same input bits; "
          "on a GPU call torch.use_deterministic_algorithms(True) (and set CUBLAS_WORKSPACE_CONFIG=:4096:8) before "
          "inverting, and keep the batch the same in both directions", stacklevel + 1)
    return True


def _log_flip_free_drift(rate: float) -> float:
    """``log a`` for the largest drift ``a`` (in units of the network's relative spacing) at which an input element
    rounds the other way with probability at most ``rate``: ``a (1 + ln(1/a))``, the mean of ``min(1, a / |z|)``
    over states of unit scale with a density near zero (elements near zero have a finer spacing, hence the log)."""
    low, high = -200.0, 0.0  # log a; the probability grows with a
    for _ in range(100):
        mid = (low + high) / 2
        if math.exp(mid) * (1 - mid) <= rate:
            low = mid
        else:
            high = mid
    return low


def auto_gamma(num_inverted_steps: int, latents_dtype, network_dtype=None, tolerance: float = DEFAULT_TOLERANCE,
               num_inputs: int = 1) -> float:
    """The smallest gamma (rounded up to 0.001) whose BDIA inversion of ``num_inverted_steps`` steps stays exact within
    ``tolerance`` (relative round-trip error): what ``gamma="auto"`` resolves to before a run.

    An inverse step divides by gamma, so rounding errors grow by up to ``A = (1/gamma)^(K-1)`` over ``K`` steps
    (:func:`bdia.rounding_amplification`); each of the ``K`` steps rounds to the latents' spacing ``u``. The rule:

    * ``K u A <= tolerance``, the latents' own rounding, amplified;
    * and, when the network runs in a lower precision than the latents (``network_dtype``, e.g. a float32 UNet fed
      float64 latents), reconstruction must feed it the bits inversion did: once one input element rounds the other
      way, the network's own rounding enters and cascades (chapter 5 counts these flips). A drift of ``a = u A / u_net``
      network spacings flips an element of size ``|z|`` with probability ``min(1, a / |z|)``, about ``a (1 + ln(1/a))``
      on average over states of unit scale (small elements have a finer spacing); over the ``K num_inputs``
      elements the network sees (``num_inputs``: the elements of one call's input, the latents' size) the expected
      number of flips is kept below :data:`FLIP_BUDGET`, 0.1. A float32 network therefore asks for a gamma nearer 1
      the larger the latents: for one Stable Diffusion image (16,384 latent elements) inverted over 40 steps it
      is about 0.96, the official code's choice; a network in the latents' precision leaves only the first bound.

    Smaller gamma damps the leapfrog's parasitic mode (its root is ``-gamma``; a prompt change excites it), which
    is why editors want the smallest exact one. The bound is a priori and conservative: the growth actually measured
    (``InversionState.noise_stats["peak_ratio"]``) stays below ``A``. Returns 1.0 where no gamma below 1 meets it
    (float32 latents over many steps, say: gamma = 1 rounds least).
    """
    steps_ = operator.index(num_inverted_steps)
    if steps_ < 2:
        raise InvalidValueError(f"gamma='auto' needs an inversion of at least 2 steps, got {steps_}")
    latents_dtype = torch.empty(0, dtype=latents_dtype).dtype if not isinstance(latents_dtype, torch.dtype) \
        else latents_dtype
    if not latents_dtype.is_floating_point:
        raise InvalidTypeError(f"latents must be floating point, got {latents_dtype}")
    unit = torch.finfo(latents_dtype).eps
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise InvalidValueError(f"tolerance must be a relative round-trip error in (0, 1), got {tolerance!r}")
    if tolerance < unit:
        raise InvalidValueError(f"tolerance={tolerance:g} is below the rounding of {latents_dtype} latents "
                                f"({unit:.1e}); use a larger tolerance" + (" or float64 latents" if unit > 1e-15 else ""))
    log_bound = math.log(tolerance / (steps_ * unit))
    if network_dtype is not None and torch.finfo(network_dtype).eps > unit:
        inputs = steps_ * max(int(num_inputs), 1)
        log_bound = min(log_bound, _log_flip_free_drift(FLIP_BUDGET / inputs) + math.log(
            torch.finfo(network_dtype).eps / unit))
    if log_bound <= 0:
        return 1.0
    gamma = math.exp(-log_bound / (steps_ - 1))
    return min(1.0, math.ceil(gamma * 1000 - 1e-9) / 1000)
