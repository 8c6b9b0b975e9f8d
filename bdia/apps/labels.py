"""What a result's weights are: the published (``"trained"``) ones or the dry run's stand-ins, told apart by the
marker file :mod:`bdia.apps.standins` writes beside every stand-in. Every table and figure of the ``paper`` profile
says which it used."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MARKER", "STANDIN_LABEL", "TRAINED_LABEL", "is_standin", "weights_label"]

MARKER = "bdia-standin.json"
STANDIN_LABEL = "stand-in (random)"
TRAINED_LABEL = "trained"


def is_standin(path) -> bool:
    """Whether a model folder (or a file inside one) was written by :func:`bdia.apps.standins.write_standins`."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return (folder / MARKER).is_file() or (folder.parent / MARKER).is_file()  # a component or its repository


def weights_label(model_id) -> str:
    """``"stand-in (random)"`` when ``model_id`` (a folder or a hub id resolved in the local cache) is a stand-in,
    else ``"trained"`` (the published weights of a hub model, or a trained local model)."""
    path = Path(str(model_id)).expanduser()
    if path.exists():
        return STANDIN_LABEL if is_standin(path) else TRAINED_LABEL
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model_id), MARKER)
    except Exception:  # noqa: BLE001 - an id that is not a repository id has no cached marker
        cached = None
    return STANDIN_LABEL if isinstance(cached, str) else TRAINED_LABEL
