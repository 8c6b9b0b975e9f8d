"""CLIP similarity of images to prompts, as editing papers report how well an edit reads as its prompt.

The score is 100 times the cosine of CLIP's image and text embeddings, floored at 0: Hessel et al.'s CLIPScore
without its 2.5 weight, as torchmetrics' ``CLIPScore`` and the PIE-Bench editing benchmark compute it (with CLIP
ViT-L/14, this module's default). It uses transformers alone: no torchvision, no torchmetrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .published import CLIP_MODEL

__all__ = ["ClipScorer"]


def _image_processor(image_size: int, **config):
    """CLIP's image processor; transformers 5 names the torchvision-free one ``CLIPImageProcessorPil``."""
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    config = {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size},
              **config}
    return cls(**config)


class ClipScorer:
    """CLIP similarity (0 to 100) of images to prompts: ``scorer(images, prompts)`` with ``images`` ``H x W x 3``
    uint8 arrays and one prompt per image (or one for all). ``weights`` says what the CLIP is (``"trained"``,
    ``"stand-in (random)"`` or the miniature's ``"random (miniature CLIP)"``) for every table that shows a score."""

    def __init__(self, model, tokenizer, weights: str, image_processor=None):
        self.model, self.tokenizer, self.weights = model.eval(), tokenizer, weights
        self.image_processor = image_processor or _image_processor(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, model_id: str = CLIP_MODEL, device="cpu", dtype=torch.float32) -> "ClipScorer":
        """The CLIP of a hub repository or folder (the transformers layout: ``config.json``, the weights, the
        tokenizer's files and ``preprocessor_config.json``), labelled by :func:`bdia.apps.labels.weights_label`."""
        import json

        from huggingface_hub import hf_hub_download
        from transformers import CLIPModel, CLIPTokenizer

        from .labels import weights_label

        model = CLIPModel.from_pretrained(model_id, torch_dtype=dtype).to(device)
        tokenizer = CLIPTokenizer.from_pretrained(model_id)
        folder = Path(str(model_id)).expanduser()
        config_file = (folder / "preprocessor_config.json" if folder.is_dir() else
                       hf_hub_download(model_id, "preprocessor_config.json"))
        config = json.loads(Path(config_file).read_text())
        processor = _image_processor(model.config.vision_config.image_size, image_mean=config["image_mean"],
                                     image_std=config["image_std"], resample=config.get("resample", 3))
        return cls(model, tokenizer, weights_label(model_id), processor)

    @torch.no_grad()
    def __call__(self, images, prompts) -> np.ndarray:
        images = [np.asarray(image) for image in images]
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"one prompt per image, or one for all: got {len(prompts)} prompts for "
                             f"{len(images)} images")
        param = next(self.model.parameters())
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        text = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        image_embeds = _embeddings(self.model.get_image_features(pixel_values=pixels.to(param.device, param.dtype)))
        text_embeds = _embeddings(self.model.get_text_features(**text.to(param.device)))
        cosine = torch.nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
        return (100 * cosine.clamp(min=0)).cpu().numpy().astype(np.float64)


def _embeddings(output) -> torch.Tensor:
    # transformers 4 returns the projected embeddings; 5 returns an output whose pooler_output holds them
    return output if isinstance(output, torch.Tensor) else output.pooler_output
