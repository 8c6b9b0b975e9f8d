"""What the benchmark can measure, as plain data (no PyTorch needed, so ``bdia --help`` stays instant).

:mod:`bdia.apps.bench` builds and times these; the command line offers them as its choices and defaults.
"""

from __future__ import annotations

__all__ = ["BENCH_MODELS", "BENCH_DTYPES", "DEFAULT_METHODS", "DEFAULT_BENCH_MODELS", "DEFAULT_STEPS"]

#: the models a benchmark row can run (see :func:`bdia.apps.bench.build_model`)
BENCH_MODELS = ("gmm2d", "digits-ideal", "digits-unet", "tiny-sd", "sd-unet", "gmm2d-flow", "tiny-sd3", "tiny-flux")
#: the latent dtypes a row can use
BENCH_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: the methods measured unless others are asked for
DEFAULT_METHODS = ("ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm", "bdia:gamma=1.0,lattice=true")
#: the models and step counts of ``python -m bdia bench`` without options
DEFAULT_BENCH_MODELS = ("gmm2d", "digits-unet", "tiny-sd")
DEFAULT_STEPS = (10, 20, 50, 100)
