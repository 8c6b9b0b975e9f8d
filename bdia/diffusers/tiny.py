"""Miniature pipelines, built in code and randomly initialised (seeded): Stable Diffusion, Stable Diffusion 3
and FLUX; and a miniature CLIP to score their images with.

Every component has the class of the real one (``UNet2DConditionModel`` or the SD3 / FLUX transformer,
``AutoencoderKL``, CLIP and T5 text encoders with tokenizers over a small local vocabulary, the real
scheduler class and config), so they run the code paths of the ``paper`` profile in a fraction of a second,
offline. Their images are noise by design: they test code, not image quality.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

from ..schedules import STABLE_DIFFUSION_CONFIG
from .loading import cast_pipeline

__all__ = ["tiny_stable_diffusion", "tiny_stable_diffusion_xl", "tiny_stable_diffusion_3", "tiny_flux", "tiny_clip"]


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


def _t5_tokenizer(model_max_length: int = 32):
    """A T5 tokenizer (sentencepiece-style unigram over single characters) built without the hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=model_max_length)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0))


def _clip_text_config(tokenizer, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
                          projection_dim=projection_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def _flow_vae(latent_channels: int = 4):
    """A two-level VAE (latents at half the image side) with a shift and a scale, like SD3's and FLUX's."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(16, 32),
                         layers_per_block=1, norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32, use_quant_conv=False,
                         use_post_quant_conv=False)


def _unit_latents(vae) -> None:
    """Set the VAE's shift and scale so that latents of a fixed synthetic image have zero mean and unit variance (as
    the real VAEs' published factors do for real images); relative errors are then measured against O(1) latents."""
    side = int(vae.config.sample_size)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    probe = torch.stack([xx, yy, torch.sin(3 * xx) * torch.cos(2 * yy)])[None]
    with torch.no_grad():
        mean = vae.encode(probe).latent_dist.mean
    if "shift_factor" in vae.config:
        vae.register_to_config(shift_factor=mean.mean().item())
        vae.register_to_config(scaling_factor=1.0 / (mean - mean.mean()).std().item())
    else:
        vae.register_to_config(scaling_factor=1.0 / mean.std().item())


def tiny_stable_diffusion_xl(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """A randomly initialised ``StableDiffusionXLPipeline`` (two CLIP text encoders, pooled embeddings and size
    conditioning) with 8x8x4 latents, 32x32 images and Stable Diffusion's DDIM scheduler config, seeded."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32,
        force_upcast=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(_clip_text_config(tokenizer)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config(tokenizer)), tokenizer_2=tokenizer, unet=unet,
        scheduler=DDIMScheduler(**STABLE_DIFFUSION_CONFIG), add_watermarker=False)
    _unit_latents(pipe.vae)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)


def tiny_stable_diffusion_3(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """A randomly initialised ``StableDiffusion3Pipeline`` (two CLIP text encoders, no T5, as SD3 allows) with 16x16x4
    latents, 32x32 images and the ``FlowMatchEulerDiscreteScheduler`` of SD3 (``shift=3.0``), seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64)
    vae = _flow_vae()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer))
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                    text_encoder_2=text_encoder_2, tokenizer_2=tokenizer, text_encoder_3=None,
                                    tokenizer_3=None)
    _unit_latents(pipe.vae)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)


def tiny_flux(seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """A randomly initialised ``FluxPipeline`` (CLIP and T5 text encoders, a guidance-distilled transformer, as
    FLUX.1-dev) with 16x16x4 latents packed into 64 tokens, 32x32 images and FLUX.1-dev's scheduler config
    (dynamic shifting), seeded."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
    vae = _flow_vae()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    t5_tokenizer = _t5_tokenizer()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(_clip_text_config(tokenizer)),
                        tokenizer=tokenizer, text_encoder_2=_t5_encoder(len(t5_tokenizer)), tokenizer_2=t5_tokenizer,
                        transformer=transformer)
    pipe.default_sample_size = 16  # the latent side FluxPipeline draws at by default (128 for FLUX.1)
    _unit_latents(pipe.vae)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    return cast_pipeline(pipe, dtype)


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


def tiny_clip(seed: int = 0, image_size: int = 32):
    """A miniature CLIP (``CLIPModel``: the real class, seeded random weights) and the miniature pipelines'
    character tokenizer, for scoring images against prompts where the published CLIP cannot be downloaded. Its
    scores are meaningless by design. Returns ``(model, tokenizer)``."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=image_size, patch_size=8, projection_dim=16)
    config = CLIPConfig(text_config=_clip_text_config(tokenizer, 16).to_dict(), vision_config=vision.to_dict(),
                        projection_dim=16)
    return CLIPModel(config).eval(), tokenizer
