"""What the benchmark can measure, as plain data (no PyTorch needed, so ``bdia --help`` stays instant).

:mod:`bdia.apps.bench` builds and times these; the command line offers them as its choices and defaults. A
*suite* is a named grid that ``python -m bdia bench --suite NAME`` runs unless options override it:

* ``cost``: what exactness costs (chapter 6): every exact method against DDIM on the exact 2-D mixture, the
  digits DDPM and the miniature Stable Diffusion UNet, float32 and float64 latents, 10 to 100 steps;
* ``edit``: what editors use instead (chapter 5): DDIM, null-text, negative-prompt, edit-friendly DDPM and Direct
  Inversion beside EDICT, O-BELM and BDIA (``gamma="auto"`` too) on the guided digits model and the miniature Stable Diffusion UNet, float64 latents with a
  float32 network, 20 and 50 steps;
* ``flow-edit``: the same for rectified flows (chapter 7): Euler inversion, RF-Inversion, FlowEdit (whose round trip
  is its edit with the source's condition as the target's, two calls per step), the midpoint rule and FireFlow
  beside EDICT, O-BELM and BDIA on the trained digits flow and the miniature SD3 transformer;
* ``gpu``: the prepared GPU check (:mod:`bdia.apps.gpu`), with its own grid.
"""

from __future__ import annotations

__all__ = ["BENCH_MODELS", "BENCH_DTYPES", "DEFAULT_METHODS", "EDIT_METHODS", "FLOW_EDIT_METHODS", "DEFAULT_BENCH_MODELS",
           "DEFAULT_STEPS",
           "SUITES", "suite_grid"]

#: the models a benchmark row can run (see :func:`bdia.apps.bench.build_model`)
BENCH_MODELS = ("gmm2d", "digits-ideal", "digits-unet", "digits-cfg", "tiny-sd", "sd-unet", "gmm2d-flow", "digits-flow",
                "tiny-sd3", "tiny-flux")
#: the latent dtypes a row can use
BENCH_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: the methods measured unless others are asked for
DEFAULT_METHODS = ("ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm", "bdia:gamma=1.0,lattice=true")
#: the editing methods: DDIM inversion, what editors use instead, and the exact methods
EDIT_METHODS = ("ddim", "null-text", "negative-prompt", "ddpm-inversion", "direct-inversion", "edict", "obelm",
                "bdia:gamma=0.9", "bdia:gamma=0.96", "bdia:gamma=1.0", "bdia:gamma=1.0,lattice=true",
                "bdia:gamma=auto")
#: the flow editors: Euler inversion, RF-Inversion, FlowEdit, RF-Solver's midpoint rule, FireFlow and the exact methods
FLOW_EDIT_METHODS = ("ddim", "rf-inversion", "flowedit", "midpoint", "fireflow", "edict", "obelm", "bdia:gamma=1.0",
                     "bdia:gamma=0.8", "bdia:gamma=auto")
#: the models and step counts of ``python -m bdia bench`` without options
DEFAULT_BENCH_MODELS = ("gmm2d", "digits-unet", "tiny-sd")
DEFAULT_STEPS = (10, 20, 50, 100)

#: the named grids of ``--suite`` (``gpu`` is run by :mod:`bdia.apps.gpu` and has its own)
SUITES = {
    "cost": {"models": DEFAULT_BENCH_MODELS, "methods": DEFAULT_METHODS, "dtypes": ("float32", "float64"),
             "steps": DEFAULT_STEPS, "repeats": 3, "network_dtype": "float32"},
    "edit": {"models": ("digits-cfg", "tiny-sd"), "methods": EDIT_METHODS, "dtypes": ("float64",),
             "steps": (20, 50), "repeats": 5, "network_dtype": "float32"},
    "flow-edit": {"models": ("digits-flow", "tiny-sd3"), "methods": FLOW_EDIT_METHODS, "dtypes": ("float64",),
                  "steps": (20, 50), "repeats": 5, "network_dtype": "float32"},
    "gpu": {},
}


def suite_grid(name: str, **given) -> dict:
    """The grid of suite ``name`` with every option in ``given`` that is not None put in its place."""
    if name not in SUITES:
        from ..errors import InvalidValueError

        raise InvalidValueError(f"unknown suite {name!r}; allowed: {', '.join(SUITES)}")
    return {**SUITES[name], **{key: value for key, value in given.items() if value is not None}}
