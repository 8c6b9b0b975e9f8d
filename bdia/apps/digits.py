"""The ``ci`` profile's real data and trained models: ``sklearn.datasets.load_digits`` (1797 8x8 digits).

* :func:`load_digits_images`: the data as ``(n, 1, 8, 8)`` images in [-1, 1] with labels.
* :func:`train_diffusion_model`: a class-conditional DDPM (diffusers ``UNet2DModel``, DDPM's linear
  schedule, eps-prediction, classifier-free guidance by label dropout). ``python -m bdia train-digits``
  reproduces the shipped weights in ``bdia/weights/digits-unet`` (a few minutes on 2 CPU cores).
* :func:`train_flow_model`: the same network and recipe as a rectified flow (linear path, velocity prediction);
  ``python -m bdia train-digits-flow`` reproduces ``bdia/weights/digits-flow``, which
  :class:`bdia.diffusers.UNetVelocityModel` calls on a :class:`bdia.FlowMatchSchedule`.
* :class:`DigitClassifier` and :func:`train_classifier`: a small CNN whose penultimate features define
  the Fréchet distance of the ``ci`` profile, as Inception's do for CIFAR10. Its trained weights ship in
  ``bdia/weights/digit-classifier`` (``python -m bdia train-classifier`` reproduces them) and
  :func:`load_classifier` loads them, so every run scores with the same fixed feature network.

The diffusion model is the same class as ``google/ddpm-cifar10-32`` and is loaded by the same
function (:func:`bdia.diffusers.load_unet`), so the ``ci`` FID runs the ``paper`` code path. This is an
application of the library (:mod:`bdia.apps`), not part of its core.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import MissingFileError
from ..schedules import VPSchedule

__all__ = ["NUM_CLASSES", "NULL_CLASS", "FLOW_TRAIN_TIMESTEPS", "load_digits_images", "train_test_split",
           "unet_config", "train_diffusion_model", "train_flow_model", "shipped_model_path", "shipped_flow_model_path", "DigitClassifier", "train_classifier",
           "shipped_classifier_path", "load_classifier", "save_classifier"]

NUM_CLASSES = 10
#: the label of the unconditional (dropped) class used for classifier-free guidance
NULL_CLASS = 10
#: the flow model's network takes ``t * FLOW_TRAIN_TIMESTEPS`` for ``t`` in [0, 1] (Stable Diffusion 3's scale)
FLOW_TRAIN_TIMESTEPS = 1000


def load_digits_images(dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(images (n, 1, 8, 8) in [-1, 1], labels (n,))``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64) / 8.0 - 1.0
    return images[:, None].to(dtype), torch.as_tensor(bunch.target, dtype=torch.long)


def train_test_split(labels: Tensor, test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded, per-class split; returns index tensors ``(train, test)``."""
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def unet_config() -> dict:
    """The diffusers ``UNet2DModel`` configuration of the digits model (class-conditional, 8x8)."""
    return dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=8, num_class_embeds=NUM_CLASSES + 1)


def shipped_model_path() -> Path:
    """Folder of the shipped digits model (``config.json`` + safetensors weights)."""
    return Path(str(resources.files("bdia") / "weights" / "digits-unet"))


def shipped_flow_model_path() -> Path:
    """Folder of the shipped digits rectified flow (``config.json`` + safetensors weights, ``training.json``)."""
    return Path(str(resources.files("bdia") / "weights" / "digits-flow"))


def shipped_classifier_path() -> Path:
    """Folder of the shipped digit classifier (``model.safetensors`` + ``training.json``)."""
    return Path(str(resources.files("bdia") / "weights" / "digit-classifier"))


def save_classifier(model: "DigitClassifier", accuracy: float, folder, record: dict | None = None) -> Path:
    """Write a classifier as ``folder/model.safetensors`` with its test accuracy (and ``training.json``)."""
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"test_accuracy": f"{accuracy:.4f}"})
    if record is not None:
        (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder


def load_classifier(path=None) -> tuple["DigitClassifier", float]:
    """``(classifier, test accuracy)`` from ``path`` (a folder of :func:`save_classifier`), by default the shipped one."""
    from safetensors import safe_open

    folder = Path(path) if path else shipped_classifier_path()
    file = folder / "model.safetensors"
    if not file.is_file():
        raise MissingFileError(f"no digit classifier at {file}; `python -m bdia train-classifier --out {folder}` "
                                "trains one")
    model = DigitClassifier()
    with safe_open(str(file), "pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
        accuracy = float(f.metadata()["test_accuracy"])
    return model.eval(), accuracy


def _train_unet(noised, desc: str, steps: int, batch_size: int, lr: float, p_uncond: float, ema_decay: float,
                seed: int, progress: bool):
    """The digits models' training loop: ``noised(x, gen) -> (z, timestep, target)`` says what the network learns
    from a batch of digits; the labels are dropped to :data:`NULL_CLASS` with probability ``p_uncond``. Returns the
    EMA ``UNet2DModel``."""
    import copy

    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digits_images()
    model = UNet2DModel(**unet_config())
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / 100) * 0.5 * (1 + math.cos(math.pi * k / steps)))
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, c = images[idx], labels[idx].clone()
        c[torch.rand(batch_size, generator=gen) < p_uncond] = NULL_CLASS
        z, timestep, target = noised(x, gen)
        loss = (model(z, timestep, class_labels=c).sample - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - ema_decay)
    return ema.eval()


def train_diffusion_model(steps: int = 2500, batch_size: int = 128, lr: float = 2e-3, p_uncond: float = 0.15,
                          ema_decay: float = 0.995, seed: int = 0, progress: bool = True):
    """Train the class-conditional digits DDPM on all 1797 digits; returns the EMA ``UNet2DModel``.

    Loss: ``|| eps_theta(alpha_t x + sigma_t eps, t, c) - eps ||^2`` with ``t`` uniform on DDPM's 1000 steps
    and the label replaced by :data:`NULL_CLASS` with probability ``p_uncond``.
    """
    abar = VPSchedule.ddpm().alphas_cumprod.float()

    def noised(x, gen):
        t = torch.randint(0, len(abar), (len(x),), generator=gen)
        eps = torch.randn(x.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x + (1 - a).sqrt() * eps, t, eps

    return _train_unet(noised, "training digits DDPM", steps, batch_size, lr, p_uncond, ema_decay, seed, progress)


def train_flow_model(steps: int = 2500, batch_size: int = 128, lr: float = 2e-3, p_uncond: float = 0.15,
                     ema_decay: float = 0.995, seed: int = 0, progress: bool = True):
    """Train the class-conditional digits rectified flow on all 1797 digits (the DDPM's network and recipe, another
    path); returns the EMA ``UNet2DModel``, to be called through :class:`bdia.diffusers.UNetVelocityModel`.

    Loss: ``|| v_theta((1 - t) x + t eps, 1000 t, c) - (eps - x) ||^2`` with ``t`` uniform on ``[0, 1]`` (the
    linear path and velocity of rectified flow, Stable Diffusion 3's timestep scale) and the label replaced by
    :data:`NULL_CLASS` with probability ``p_uncond``.
    """
    def noised(x, gen):
        t = torch.rand(len(x), generator=gen)
        eps = torch.randn(x.shape, generator=gen)
        s = t.view(-1, 1, 1, 1)
        return (1 - s) * x + s * eps, t * FLOW_TRAIN_TIMESTEPS, eps - x

    return _train_unet(noised, "training digits flow", steps, batch_size, lr, p_uncond, ema_decay, seed, progress)


class DigitClassifier(nn.Module):
    """A small CNN for 8x8 digits; :meth:`features` (64-d, penultimate layer) feed the Fréchet distance."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, NUM_CLASSES)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images.to(self.head.weight.dtype))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def train_classifier(seed: int = 0, epochs: int = 30, batch_size: int = 64,
                     progress: bool = False) -> tuple[DigitClassifier, float]:
    """Train :class:`DigitClassifier` on a seeded 80 % split; returns ``(model, test accuracy)``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digits_images()
    train, test = train_test_split(labels, seed=seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in tqdm(range(epochs), desc="training digit classifier", disable=not progress):
        model.train()
        for batch in train[torch.randperm(len(train), generator=gen)].split(batch_size):
            # small random shifts make the features robust to the samplers' imperfections
            x = torch.roll(images[batch], shifts=tuple(torch.randint(-1, 2, (2,), generator=gen).tolist()), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(x), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(-1) == labels[test]).float().mean().item()
    return model, accuracy

