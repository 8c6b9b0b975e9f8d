"""A miniature Stable Diffusion pipeline, built in code and randomly initialised (seeded).

Every component has the class of the real one (``UNet2DConditionModel``, ``AutoencoderKL``,
``CLIPTextModel`` with a ``CLIPTokenizer`` over a small local vocabulary, ``DDIMScheduler`` with Stable
Diffusion's config), so it runs the exact code path of the ``paper`` profile in a fraction of a second.
Its images are noise by design: it tests code, not image quality.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

from ..schedules import STABLE_DIFFUSION_CONFIG
from .loading import cast_pipeline

__all__ = ["tiny_stable_diffusion"]


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    # character-level BPE: every character, alone and word-final, and no merges
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def tiny_stable_diffusion(seed: int = 0, prediction_type: str = "epsilon", dtype: torch.dtype = torch.float32,
                          device="cpu"):
    """A randomly initialised ``StableDiffusionPipeline`` with 8x8x4 latents and 32x32 images (seeded)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=16, projection_dim=32, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    scheduler = DDIMScheduler(**{**STABLE_DIFFUSION_CONFIG, "prediction_type": prediction_type})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    # like Stable Diffusion's 0.18215, choose the VAE's scaling factor so that latents have unit variance
    # (measured on a fixed synthetic image); otherwise relative errors would be measured against tiny latents
    side = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    probe = torch.stack([xx, yy, torch.sin(3 * xx) * torch.cos(2 * yy)])[None]
    with torch.no_grad():
        std = vae.encode(probe).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)
