"""When a round trip cannot be exact, and the warnings that say so (:class:`ExactnessWarning`).

Every sampler, scheduler and pipeline of bdia warns through these functions, so that one situation
always gives one message:

* :func:`warn_half_precision`: states in float16 or bfloat16 (their rounding dominates);
* :func:`warn_amplified`: an a-priori rounding amplification above :data:`AMPLIFICATION_WARN`
  (BDIA's ``(1/gamma)^(K-1)``);
* :func:`warn_grown`: inverted states that grew far beyond the noise level of their timesteps;
* :func:`warn_lower_precision_output`: a model that returns a lower precision than its states;
* :func:`warn_lower_precision_resume`: an inversion continued in a lower precision than it was made in;
* :func:`warn_nondeterministic`: a lattice round trip on a GPU without deterministic kernels.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["ExactnessWarning", "AMPLIFICATION_WARN", "warn_half_precision", "warn_amplified", "warn_grown",
           "warn_lower_precision_output", "warn_lower_precision_resume", "warn_nondeterministic",
           "nondeterministic_kernels"]

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


def warn_grown(method: str, peak_ratio: float, dtype: torch.dtype, stacklevel: int = 2) -> bool:
    """Warn (and return True) when an inversion's states grew beyond the threshold over their noise level."""
    if peak_ratio <= AMPLIFICATION_WARN:
        return False
    floor = torch.finfo(dtype).eps * peak_ratio
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
