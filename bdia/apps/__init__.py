"""Applications built on bdia's library, outside its core: they may import :mod:`bdia.diffusers` and
packages the core does without (scikit-learn, matplotlib, pandas, accelerate, safetensors).

* :mod:`bdia.apps.fid`: resumable FID experiments (``python -m bdia fid``);
* :mod:`bdia.apps.bench`: the cost benchmark (``python -m bdia bench``), with its grid in
  :mod:`bdia.apps.suites`;
* :mod:`bdia.apps.digits`: the ``ci`` profile's real data and trained models (sklearn's digits);
* :mod:`bdia.apps.published`: the ``paper`` profile's models as published (hub ids, configurations);
* :mod:`bdia.apps.standins`: stand-in weights of those models, for offline dry runs;
* :mod:`bdia.apps.plotting` and :mod:`bdia.apps.book`: figure and sentence helpers for the book;
* :mod:`bdia.apps.files`: content digests and writability checks for the commands that write results.
"""
