"""LPIPS (Zhang et al., CVPR 2018), the learned perceptual distance editing papers report beside PSNR, in its VGG
variant: VGG-16's activations after five ReLUs, each unit-normalised along its channels, their squared
differences weighted per channel by a learned linear head, averaged over the image and summed over the five.

Written in plain PyTorch from the paper's definition, so that it needs no torchvision: the VGG-16 weights are the
file torchvision publishes and the heads the file LPIPS v0.1 publishes, both fetched by ``torch.hub`` into
``TORCH_HOME`` (the stand-ins put random ones there for the dry run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["VGG16_URL", "LPIPS_VGG_URL", "VGG16_TAPS", "LPIPS"]

#: torchvision's ImageNet VGG-16 (its ``features`` are what LPIPS uses)
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
#: LPIPS v0.1's linear heads for VGG-16 (``lin0`` ... ``lin4``)
LPIPS_VGG_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
#: VGG-16's convolution widths in ``features`` order, "M" a 2x2 max-pool (torchvision's layer indices follow)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: the ``features`` indices whose outputs LPIPS compares: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_TAPS = (3, 8, 15, 22, 29)
_TAP_WIDTHS = (64, 128, 256, 512, 512)
#: LPIPS's input scaling: images in [-1, 1] shifted and scaled to ImageNet's statistics
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> torch.nn.Sequential:
    layers, channels = [], 3
    for width in _VGG16:
        if width == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
            channels = width
    return torch.nn.Sequential(*layers)


class LPIPS(torch.nn.Module):
    """``LPIPS(vgg_state, heads_state, weights)(a, b)``: the distance of each image of ``a`` to the matching one of
    ``b`` (``N x 3 x H x W`` in [-1, 1]); :meth:`distance` takes uint8 ``H x W x 3`` arrays. ``vgg_state`` is a
    state dict in torchvision's VGG-16 layout (``features.<i>.weight``; other keys are ignored), ``heads_state``
    in LPIPS's (``lin<k>.model.1.weight``); None leaves that part random. ``weights`` labels the scores."""

    def __init__(self, vgg_state: dict | None = None, heads_state: dict | None = None, weights: str = "random"):
        super().__init__()
        self.features, self.weights = _vgg16_features(), weights
        self.heads = torch.nn.ParameterList([torch.nn.Parameter(torch.rand(1, c, 1, 1) / c) for c in _TAP_WIDTHS])
        if vgg_state is not None:
            self.features.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items()
                                           if k.startswith("features.")})
        if heads_state is not None:
            for k, head in enumerate(self.heads):
                head.data.copy_(heads_state[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).reshape(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    @classmethod
    def from_hub(cls, device="cpu") -> "LPIPS":
        """The published VGG-16 and LPIPS v0.1 heads, from ``TORCH_HOME``'s hub cache or downloaded into it;
        labelled by :func:`bdia.apps.labels.weights_label` (stand-ins when the cache holds the dry run's)."""
        from .labels import STANDIN_LABEL, weights_label

        states, labels = [], []
        for url in (VGG16_URL, LPIPS_VGG_URL):
            states.append(torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                             weights_only=True))
            labels.append(weights_label(Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]))
        label = STANDIN_LABEL if STANDIN_LABEL in labels else labels[0]
        return cls(*states, weights=label).to(device)

    def tapped(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The activations LPIPS compares, each unit-normalised along its channels."""
        x, taps = (images - self.shift) / self.scale, []
        for i, layer in enumerate(self.features[: VGG16_TAPS[-1] + 1]):
            x = layer(x)
            if i in VGG16_TAPS:
                taps.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return taps

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for head, fa, fb in zip(self.heads, self.tapped(a), self.tapped(b)):
            total = total + ((fa - fb).square() * head).sum(dim=1).mean(dim=(1, 2))
        return total

    def distance(self, images, others) -> np.ndarray:
        """LPIPS between uint8 ``H x W x 3`` arrays, pair by pair."""
        def tensor(batch):
            x = torch.from_numpy(np.stack([np.asarray(i) for i in batch])).permute(0, 3, 1, 2)
            return (x.to(self.shift) / 127.5 - 1).to(self.shift.device)

        return self(tensor(images), tensor(others)).cpu().numpy().astype(np.float64)
