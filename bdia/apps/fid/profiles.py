"""The FID profiles as data: which model, detector and reference each one uses (no PyTorch needed).

:func:`bdia.apps.fid.run.resolve` turns a profile and a config into loaded models; nothing else looks at a
profile's name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIDProfile", "PROFILES", "PAPER_MODEL", "PAPER_REFERENCE"]

PAPER_MODEL = "google/ddpm-cifar10-32"
PAPER_REFERENCE = "uoft-cs/cifar10"


@dataclass(frozen=True)
class FIDProfile:
    """What a profile samples and how it scores.

    ``model``: the default model, a hub id, or ``None`` for the digits DDPM that ships with bdia.
    ``null_label``: the model is class-conditional and is sampled unconditionally, with its null label.
    ``schedule_from_model``: the noise schedule is read from the model's ``scheduler_config.json`` (else DDPM's
    linear schedule). ``detector``: ``"digit-classifier"`` (the classifier shipped with bdia) or
    ``"inception"`` (NVlabs' Inception-v3). ``reference``: the default reference set, a hub data set id, or
    ``None`` for all of sklearn's digits. ``custom_scoring``: whether ``--detector`` and ``--reference`` may
    replace them.
    """

    name: str
    data: str
    model: str | None
    null_label: bool
    schedule_from_model: bool
    detector: str
    reference: str | None
    custom_scoring: bool


PROFILES = {
    "ci": FIDProfile("ci", "digits, not CIFAR10", model=None, null_label=True, schedule_from_model=False,
                     detector="digit-classifier", reference=None, custom_scoring=False),
    "paper": FIDProfile("paper", "CIFAR10", model=PAPER_MODEL, null_label=False, schedule_from_model=True,
                        detector="inception", reference=PAPER_REFERENCE, custom_scoring=True),
}
