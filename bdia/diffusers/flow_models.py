"""Rectified-flow transformers with a prompt as ``model(z, t) -> v`` for the core samplers (``t`` in ``[0, 1]``).

Each model declares ``prediction = PredictionConfig("velocity")`` (:func:`bdia.from_velocity`), runs the
transformer in its own dtype and returns the velocity in the dtype of the latents ``z``, which are the VAE's
``(B, C, H, W)`` latents (shifted and scaled) in both families:

* :class:`SD3VelocityModel`: Stable Diffusion 3 / 3.5; the transformer takes ``t * num_train_timesteps`` and
  classifier-free guidance batches the unconditional pass with the conditional one;
* :class:`FluxVelocityModel`: FLUX; the latents are packed into 2x2 tokens for the transformer and unpacked
  after it, the transformer takes ``t`` itself, and FLUX.1-dev's guidance is a distilled embedding (no CFG).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..predictions import VELOCITY
from .edit_tools import expand_prompts
from .models import classifier_free_guidance, guidance_of, uses_guidance

__all__ = ["SD3VelocityModel", "FluxVelocityModel", "pack_latents", "unpack_latents", "latent_token_ids"]


def pack_latents(z: Tensor) -> Tensor:
    """``(B, C, H, W)`` latents as FLUX's ``(B, H/2 * W/2, 4 C)`` tokens of 2x2 patches."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """The inverse of :func:`pack_latents` for latents of ``height x width``."""
    b, _, channels = tokens.shape
    c = channels // 4
    return tokens.reshape(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def latent_token_ids(height: int, width: int, device, dtype) -> Tensor:
    """FLUX's position ids of the packed tokens: ``(0, row, column)`` of each 2x2 patch."""
    rows = torch.arange(height // 2, dtype=dtype, device=device)[:, None].expand(height // 2, width // 2)
    cols = torch.arange(width // 2, dtype=dtype, device=device)[None, :].expand(height // 2, width // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)


def _batched(emb: Tensor, batch: int) -> Tensor:
    return emb if emb.shape[0] == batch else emb.expand(batch, *emb.shape[1:])


class _TransformerModel:
    """What the flow adapters share: the network an edit control binds to (:mod:`bdia.diffusers.controls`)."""

    prediction = VELOCITY

    @property
    def network(self) -> torch.nn.Module:
        return self.transformer


class SD3VelocityModel(_TransformerModel):
    """A Stable Diffusion 3 pipeline's transformer with a prompt as ``model(z, t) -> v``; prompts are encoded once.
    ``guidance_scale``: a number, or one per sample (an edit's source and target branches at their own)."""

    def __init__(self, pipe, prompt, guidance_scale: float = 1.0, negative_prompt: str = "", batch: int = 1,
                 max_sequence_length: int = 256):
        self.transformer, self.guidance_scale = pipe.transformer, guidance_of(guidance_scale)
        self.num_train_timesteps = pipe.scheduler.config.num_train_timesteps
        prompts = expand_prompts(prompt, batch)
        with torch.no_grad():
            self.cond, self.uncond, self.pooled, self.uncond_pooled = pipe.encode_prompt(
                prompts, prompts, prompts, device=pipe.transformer.device,
                do_classifier_free_guidance=uses_guidance(self.guidance_scale), negative_prompt=[negative_prompt] * batch,
                negative_prompt_2=[negative_prompt] * batch, negative_prompt_3=[negative_prompt] * batch,
                max_sequence_length=max_sequence_length)

    @classmethod
    def from_embeddings(cls, transformer, cond: Tensor, pooled: Tensor, num_train_timesteps: int = 1000):
        """The transformer with given prompt embeddings (no text encoders; guidance 1), e.g. random ones for a
        benchmark of the transformer alone."""
        model = cls.__new__(cls)
        model.transformer, model.guidance_scale, model.num_train_timesteps = transformer, 1.0, num_train_timesteps
        model.cond, model.pooled, model.uncond, model.uncond_pooled = cond, pooled, None, None
        return model

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype the transformer computes in (``gamma="auto"`` keeps a lower-precision network's inputs)."""
        return self.transformer.dtype

    @property
    def embeddings(self) -> tuple:
        """Everything the model is conditioned on (for the inversion's fingerprint)."""
        return self.cond, self.uncond, self.pooled, self.uncond_pooled

    @torch.no_grad()
    def __call__(self, z: Tensor, t) -> Tensor:
        x = z.to(self.transformer.dtype)
        batch = z.shape[0]
        cond, pooled = _batched(self.cond, batch), _batched(self.pooled, batch)
        if uses_guidance(self.guidance_scale):
            x = torch.cat([x, x])
            cond = torch.cat([_batched(self.uncond, batch), cond])
            pooled = torch.cat([_batched(self.uncond_pooled, batch), pooled])
        timestep = torch.full((x.shape[0],), float(t) * self.num_train_timesteps, device=x.device)
        out = self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=cond.to(x.dtype),
                               pooled_projections=pooled.to(x.dtype)).sample
        if uses_guidance(self.guidance_scale):
            out = classifier_free_guidance(out, self.guidance_scale)
        return out.to(z.dtype)


class FluxVelocityModel(_TransformerModel):
    """A FLUX pipeline's transformer with a prompt as ``model(z, t) -> v`` on unpacked ``(B, C, H, W)`` latents;
    ``guidance_scale`` feeds FLUX.1-dev's distilled guidance embedding (ignored by a transformer without one): a
    number, or one per sample."""

    def __init__(self, pipe, prompt, guidance_scale: float = 3.5, batch: int = 1, max_sequence_length: int = 512):
        self.transformer, self.guidance_scale = pipe.transformer, guidance_of(guidance_scale)
        prompts = expand_prompts(prompt, batch)
        with torch.no_grad():
            self.cond, self.pooled, self.text_ids = pipe.encode_prompt(
                prompts, prompts, device=pipe.transformer.device, max_sequence_length=max_sequence_length)

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype the transformer computes in (``gamma="auto"`` keeps a lower-precision network's inputs)."""
        return self.transformer.dtype

    @property
    def embeddings(self) -> tuple:
        """Everything the model is conditioned on (for the inversion's fingerprint)."""
        return self.cond, self.pooled

    @torch.no_grad()
    def __call__(self, z: Tensor, t) -> Tensor:
        batch, _, height, width = z.shape
        x = pack_latents(z.to(self.transformer.dtype))
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.as_tensor(self.guidance_scale, dtype=torch.float32, device=x.device).expand(batch)
        out = self.transformer(hidden_states=x, timestep=torch.full((batch,), float(t), device=x.device),
                               guidance=guidance, pooled_projections=_batched(self.pooled, batch).to(x.dtype),
                               encoder_hidden_states=_batched(self.cond, batch).to(x.dtype),
                               txt_ids=self.text_ids, img_ids=latent_token_ids(height, width, x.device, x.dtype)).sample
        return unpack_latents(out, height, width).to(z.dtype)
