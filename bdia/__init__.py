"""bdia: exact diffusion inversion by bi-directional integration approximation, and its relatives.

Three layers (the book's page "How the code is organised" shows how a call flows through them):

* the core, which needs PyTorch, NumPy, SciPy and tqdm only: :mod:`bdia.schedules` (noise schedules and
  grids; :mod:`bdia.flow` for rectified flows), :mod:`bdia.steps` (pure update rules), :mod:`bdia.predictions` (what a network predicts),
  :mod:`bdia.methods` (the registry: everything bdia knows about each method, and its loops),
  :mod:`bdia.samplers` (:func:`sample` and :func:`invert`), :mod:`bdia.trajectory`, :mod:`bdia.lattice`,
  :mod:`bdia.exactness`, :mod:`bdia.errors`, :mod:`bdia.models`, :mod:`bdia.experiments`, and the exact
  models of :mod:`bdia.toy` and :mod:`bdia.ode`;
* :mod:`bdia.diffusers`: adapters that put the core behind diffusers' schedulers and pipelines;
* :mod:`bdia.apps`: applications on top (FID, the benchmark, the digits data and models, stand-in
  weights, plotting, the book's helpers) and the command line ``python -m bdia``.

The names below are loaded on first use, so ``import bdia`` (and ``bdia --help``) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

__version__ = "0.1.0"

#: public name -> the core module that defines it
_EXPORTS = {
    "sample": "samplers", "invert": "samplers", "InversionState": "samplers", "inverted_steps": "samplers",
    "REGISTRY": "methods", "METHODS": "methods", "INVERTIBLE_METHODS": "methods", "MethodSpec": "methods",
    "method_defaults": "methods", "rounding_amplification": "methods", "get_method": "methods",
    "auto_gamma": "exactness",
    "CountingModel": "models", "RecordingModel": "models", "edm_denoiser_from_eps": "models",
    "eps_model_from_denoiser": "models",
    "PredictionConfig": "predictions", "DynamicThresholding": "predictions", "with_prediction": "predictions",
    "ExactnessWarning": "exactness",
    "NonFiniteError": "errors", "UsageError": "errors",
    "default_lattice": "lattice",
    "VPSchedule": "schedules", "EDMSchedule": "schedules", "Schedule": "schedules", "Level": "schedules",
    "karras_sigmas": "schedules",
    "FlowMatchSchedule": "flow", "from_velocity": "flow",
}
_SUBMODULES = ("steps", "schedules", "predictions", "methods", "samplers", "trajectory", "lattice", "exactness",
               "errors", "models", "experiments", "toy", "ode", "lazy", "flow", "loops", "diffusers", "apps")

__all__ = sorted(_EXPORTS) + ["steps"]

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from . import steps
    from .errors import NonFiniteError, UsageError
    from .exactness import ExactnessWarning, auto_gamma
    from .flow import FlowMatchSchedule, from_velocity
    from .lattice import default_lattice
    from .methods import (INVERTIBLE_METHODS, METHODS, REGISTRY, MethodSpec, get_method, method_defaults,
                          rounding_amplification)
    from .models import CountingModel, RecordingModel, edm_denoiser_from_eps, eps_model_from_denoiser
    from .predictions import DynamicThresholding, PredictionConfig, with_prediction
    from .samplers import InversionState, invert, inverted_steps, sample
    from .schedules import EDMSchedule, Level, Schedule, VPSchedule, karras_sigmas


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, _SUBMODULES)
