"""bdia: exact diffusion inversion by bi-directional integration approximation, and its relatives.

The core (this package minus :mod:`bdia.diffusers`) depends on PyTorch, NumPy, SciPy and tqdm only:

* :mod:`bdia.schedules`: noise schedules and timestep grids;
* :mod:`bdia.steps`: pure update rules (DDIM, DDIM inversion, EDICT, BDIA-DDIM, O-BELM, Heun, BDIA-EDM);
* :mod:`bdia.samplers`: :func:`sample` and :func:`invert`, which run whole trajectories;
* :mod:`bdia.toy` and :mod:`bdia.ode`: exact models and reference ODE solutions.
"""

from . import steps
from .models import CountingModel, RecordingModel, edm_denoiser_from_eps, eps_model_from_denoiser
from .samplers import (
    EXACT_METHODS,
    INVERTIBLE_METHODS,
    METHODS,
    ExactnessWarning,
    InversionState,
    NonFiniteError,
    default_lattice,
    invert,
    method_defaults,
    rounding_amplification,
    sample,
)
from .schedules import EDMSchedule, Level, Schedule, VPSchedule, karras_sigmas

__version__ = "0.1.0"

__all__ = [
    "sample",
    "invert",
    "InversionState",
    "CountingModel",
    "RecordingModel",
    "NonFiniteError",
    "ExactnessWarning",
    "METHODS",
    "INVERTIBLE_METHODS",
    "EXACT_METHODS",
    "method_defaults",
    "rounding_amplification",
    "default_lattice",
    "VPSchedule",
    "EDMSchedule",
    "Schedule",
    "Level",
    "karras_sigmas",
    "edm_denoiser_from_eps",
    "eps_model_from_denoiser",
    "steps",
]
