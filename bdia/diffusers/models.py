"""diffusers networks as ``model(z, t) -> eps`` callables for :func:`bdia.sample` and :func:`bdia.invert`.

Each adapter runs the network in its own dtype and returns eps in the dtype of the latents; a
v-prediction network's output is converted by the core (:class:`bdia.predictions.PredictionConfig`), and
the scheduler config's ``clip_sample`` / ``thresholding`` is attached as the model's ``prediction``, so the
core's samplers limit ``x0_hat`` as diffusers' schedulers do.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..errors import InvalidValueError
from ..predictions import EPSILON, VELOCITY, PredictionConfig
from ..schedules import VPSchedule

__all__ = ["UNetEpsModel", "UNetVelocityModel", "StableDiffusionEpsModel", "StableDiffusionXLEpsModel", "schedule_from_scheduler",
           "classifier_free_guidance", "guidance_of", "uses_guidance"]

_V_PREDICTION = PredictionConfig("v_prediction")


def schedule_from_scheduler(scheduler) -> VPSchedule:
    """The :class:`~bdia.VPSchedule` of a diffusers DDIM-style scheduler (its betas, spacing and final alpha)."""
    return VPSchedule.from_diffusers_config(scheduler.config)


def classifier_free_guidance(out: Tensor, guidance_scale) -> Tensor:
    """``eps_u + guidance_scale * (eps_c - eps_u)`` of a batch holding the unconditional half first; the scale is a
    number or one per sample (a 1-d tensor: an edit's source and target branches each at their own guidance)."""
    uncond, cond = out.chunk(2)
    if torch.is_tensor(guidance_scale):
        guidance_scale = guidance_scale.to(out).view(-1, *([1] * (out.dim() - 1)))
    return uncond + guidance_scale * (cond - uncond)


def guidance_of(guidance_scale):
    """A guidance scale as the eps models keep it: a float, or a 1-d float64 tensor with one scale per sample
    (several values only where they differ)."""
    if isinstance(guidance_scale, (int, float)) and not isinstance(guidance_scale, bool):
        return float(guidance_scale)
    scales = torch.as_tensor(guidance_scale, dtype=torch.float64).flatten()
    if scales.numel() == 0 or not torch.isfinite(scales).all():
        raise InvalidValueError(f"guidance_scale must be a number or one finite number per sample, got {guidance_scale!r}")
    return float(scales[0]) if bool((scales == scales[0]).all()) else scales


def uses_guidance(guidance_scale) -> bool:
    """Whether a guidance (a number or one per sample) needs the unconditional pass."""
    if not torch.is_tensor(guidance_scale):  # every network call asks: no tensor for the common case
        return float(guidance_scale) > 1
    return bool((guidance_scale > 1).any())


def _check_prediction_type(config, allow_v_prediction: bool, what: str) -> str:
    kind = config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return kind
    if kind == "v_prediction":
        if allow_v_prediction:
            return kind
        raise InvalidValueError(
            f"{what} is a v-prediction model (prediction_type='v_prediction'). Inversion with such models (e.g. Stable "
            "Diffusion 2.1 at 768 px) is known to collapse; use an eps-prediction model such as "
            "stabilityai/stable-diffusion-2-1-base, or pass allow_v_prediction=True to convert its output exactly "
            "(eps = alpha_t v + sigma_t z).")
    raise InvalidValueError(f"{what} predicts {kind!r}; only 'epsilon' (and, on request, 'v_prediction') are "
                            "supported")


class _EpsBase:
    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype the network computes in (``gamma="auto"`` keeps a lower-precision network's inputs unchanged)."""
        return next(self.network.parameters()).dtype

    def __init__(self, network, scheduler_config, allow_v_prediction: bool, what: str, schedule=None,
                 follow_clipping: bool = True):
        self.network = network
        self.prediction_type = _check_prediction_type(scheduler_config, allow_v_prediction, what)
        #: how the core forms x0_hat from this model's eps: clipped or thresholded as the scheduler config says
        self.prediction = EPSILON
        if follow_clipping:
            limits = PredictionConfig.from_scheduler_config(scheduler_config)
            self.prediction = PredictionConfig("epsilon", limits.clip_range, limits.thresholding)
        self.schedule = None
        if self.prediction_type == "v_prediction":  # the noise levels are needed to convert v to eps
            self.schedule = schedule or VPSchedule.from_diffusers_config(scheduler_config)

    def _to_eps(self, out: Tensor, z: Tensor, t) -> Tensor:
        out = out.to(z.dtype)
        if self.prediction_type == "v_prediction":
            return _V_PREDICTION.convert(out, z, self.schedule.level(t)).eps
        return out


@contextlib.contextmanager
def _class_embedding_rows(unet, rows: Tensor):
    """Within the block, the first ``len(rows)`` rows of the UNet's class embedding are ``rows`` (differentiable)."""
    def replace(module, inputs, output):
        return torch.cat([rows.to(output.dtype), output[len(rows):]])

    handle = unet.class_embedding.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _frozen(network):
    """Gradients flow to the inputs only (null-text inversion optimises an embedding, never the weights)."""
    flags = [p.requires_grad for p in network.parameters()]
    network.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(network.parameters(), flags):
            p.requires_grad_(flag)


class UNetEpsModel(_EpsBase):
    """A diffusers ``UNet2DModel`` as ``model(z, t) -> eps``.

    ``class_labels``: one label per sample (class-conditional models); ``guidance_scale > 1`` adds
    classifier-free guidance against ``null_class``, batching the conditional and unconditional passes (a scale per
    sample guides each at its own, as an edit's source and target branches are).
    The network runs in its own dtype; its output is returned in the dtype of ``z``. ``follow_clipping``:
    limit ``x0_hat`` as the scheduler config's ``clip_sample`` / ``thresholding`` says (as diffusers does).
    """

    def __init__(self, unet, class_labels: Tensor | None = None, guidance_scale: float = 1.0,
                 null_class: int | None = None, scheduler_config: dict | None = None,
                 allow_v_prediction: bool = False, follow_clipping: bool = True):
        config = scheduler_config or {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
        super().__init__(unet, config, allow_v_prediction, "this UNet", follow_clipping=follow_clipping)
        guidance_scale = guidance_of(guidance_scale)
        if uses_guidance(guidance_scale) and null_class is None:
            raise InvalidValueError("classifier-free guidance (guidance_scale > 1) needs null_class, the unconditional "
                                    "label")
        if uses_guidance(guidance_scale) and class_labels is None:
            raise InvalidValueError("classifier-free guidance needs class_labels")
        self.class_labels, self.guidance_scale, self.null_class = class_labels, guidance_scale, null_class

    def _timestep(self, t):
        """The network's timestep for the core's time ``t`` (the same number on a VP schedule)."""
        return t

    def _labels(self, batch: int, device) -> Tensor | None:
        if self.class_labels is None:
            return None
        labels = torch.as_tensor(self.class_labels, device=device).long().flatten()
        if labels.numel() == 1:
            labels = labels.expand(batch)
        if labels.numel() != batch:
            raise InvalidValueError(f"{labels.numel()} class labels for a batch of {batch} states")
        return labels

    # -- the guided model's branches (null-text and negative-prompt inversion) -------------------------------
    def _class_rows(self, labels: Tensor) -> Tensor:
        return self.network.class_embedding(labels).detach()

    def null_embedding(self, batch: int) -> Tensor:
        """The null class's embedding, one row per sample (what null-text inversion optimises)."""
        if self.null_class is None:
            raise InvalidValueError("null-text and negative-prompt inversion need null_class, the unconditional label")
        device = next(self.network.parameters()).device
        return self._class_rows(torch.full((batch,), self.null_class, device=device))

    def conditional_embedding(self, batch: int) -> Tensor:
        """The condition's class embedding, one row per sample (negative-prompt inversion's null embedding)."""
        return self._class_rows(self._labels(batch, next(self.network.parameters()).device))

    def conditional(self, z: Tensor, t) -> Tensor:
        with torch.no_grad():
            x = z.to(next(self.network.parameters()).dtype)
            out = self.network(x, self._timestep(t), class_labels=self._labels(z.shape[0], z.device)).sample
        return self._to_eps(out, z, t)

    def unconditional(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        x = z.to(next(self.network.parameters()).dtype)
        null = torch.full((z.shape[0],), self.null_class, device=z.device)
        with _frozen(self.network), _class_embedding_rows(self.network, null_embedding):
            out = self.network(x, self._timestep(t), class_labels=null).sample
        return self._to_eps(out, z, t)

    def guided(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        labels = self._labels(z.shape[0], z.device)
        x = z.to(next(self.network.parameters()).dtype)
        with torch.no_grad(), _class_embedding_rows(self.network, null_embedding):
            out = self.network(torch.cat([x, x]), self._timestep(t),
                               class_labels=torch.cat([torch.full_like(labels, self.null_class), labels])).sample
        return self._to_eps(classifier_free_guidance(out, self.guidance_scale), z, t)

    @torch.no_grad()
    def __call__(self, z: Tensor, t) -> Tensor:
        net_dtype = next(self.network.parameters()).dtype
        labels = self._labels(z.shape[0], z.device)
        x = z.to(net_dtype)
        if uses_guidance(self.guidance_scale):
            null = torch.full_like(labels, self.null_class)
            out = self.network(torch.cat([x, x]), self._timestep(t), class_labels=torch.cat([null, labels])).sample
            out = classifier_free_guidance(out, self.guidance_scale)
        else:
            out = self.network(x, self._timestep(t), class_labels=labels).sample
        return self._to_eps(out, z, t)


class UNetVelocityModel(UNetEpsModel):
    """A diffusers ``UNet2DModel`` trained on the rectified flow's linear path, ``z_t = (1 - t) x + t eps``, to
    predict the velocity ``v = eps - x``, as ``model(z, t) -> v`` for a :class:`~bdia.FlowMatchSchedule` (``t`` in
    ``[0, 1]``; declared as a velocity model, :func:`bdia.from_velocity`). The network takes
    ``t * num_train_timesteps``, as Stable Diffusion 3's transformer does. Labels and classifier-free guidance as
    :class:`UNetEpsModel` (guidance mixes velocities as it mixes eps: both are affine in the prediction)."""

    def __init__(self, unet, class_labels: Tensor | None = None, guidance_scale: float = 1.0,
                 null_class: int | None = None, num_train_timesteps: int = 1000):
        super().__init__(unet, class_labels, guidance_scale, null_class, follow_clipping=False)
        self.prediction_type, self.prediction = "velocity", VELOCITY
        self.num_train_timesteps = int(num_train_timesteps)

    def _timestep(self, t):
        return t * self.num_train_timesteps


class StableDiffusionEpsModel(_EpsBase):
    """A Stable Diffusion pipeline's UNet with a text prompt as ``model(z, t) -> eps``.

    Prompts are encoded once. With ``guidance_scale > 1`` (as in diffusers' pipelines) the unconditional
    (``negative_prompt``) and conditional passes run as one batch and are combined as
    ``eps_u + guidance_scale * (eps_c - eps_u)``. The UNet runs in its own dtype (e.g. float16 on a GPU);
    the returned eps has the dtype of the latents, so exactness depends only on the latents' dtype.
    ``schedule``: the pipeline's :class:`~bdia.VPSchedule`, when the caller has it (else read from the
    scheduler config, for a v-prediction model's conversion).
    """

    def __init__(self, pipe, prompt: str | list[str], guidance_scale: float = 1.0, negative_prompt: str = "",
                 allow_v_prediction: bool = False, schedule=None, follow_clipping: bool = True):
        super().__init__(pipe.unet, pipe.scheduler.config, allow_v_prediction, "this pipeline", schedule,
                         follow_clipping)
        self.guidance_scale, self.negative_prompt, self.pipe = guidance_of(guidance_scale), negative_prompt, pipe
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(prompts, pipe.unet.device, 1, uses_guidance(self.guidance_scale),
                                              negative_prompt=[negative_prompt] * len(prompts))
        self.cond, self.uncond = cond, uncond

    def _encode(self, prompts: list[str]) -> Tensor:
        return self.pipe.encode_prompt(prompts, self.pipe.unet.device, 1, False)[0]

    @property
    def embeddings(self) -> tuple:
        """Everything the model is conditioned on (for an inversion's fingerprint)."""
        return self.cond, self.uncond

    def _embeddings(self, emb: Tensor, batch: int) -> Tensor:
        if emb.shape[0] == batch:
            return emb
        if emb.shape[0] == 1:
            return emb.expand(batch, *emb.shape[1:])
        raise InvalidValueError(f"{emb.shape[0]} prompts for a batch of {batch} latents")

    # -- the guided model's branches (null-text and negative-prompt inversion) -------------------------------
    def null_embedding(self, batch: int) -> Tensor:
        """The negative prompt's embedding (the empty prompt's by default), one per sample: what null-text inversion
        optimises."""
        if self.uncond is None:
            with torch.no_grad():
                self.uncond = self._encode([self.negative_prompt] * self.cond.shape[0])
        return self._embeddings(self.uncond, batch).detach()

    def conditional_embedding(self, batch: int) -> Tensor:
        """The prompt's embedding, one per sample (negative-prompt inversion's null embedding)."""
        return self._embeddings(self.cond, batch).detach()

    def conditional(self, z: Tensor, t) -> Tensor:
        x = z.to(self.network.dtype)
        with torch.no_grad():
            out = self.network(x, t, encoder_hidden_states=self._embeddings(self.cond, z.shape[0]).to(x.dtype)).sample
        return self._to_eps(out, z, t)

    def unconditional(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        x = z.to(self.network.dtype)
        with _frozen(self.network):
            out = self.network(x, t, encoder_hidden_states=null_embedding.to(x.dtype)).sample
        return self._to_eps(out, z, t)

    def guided(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        x = z.to(self.network.dtype)
        cond = self._embeddings(self.cond, z.shape[0]).to(x.dtype)
        with torch.no_grad():
            out = self.network(torch.cat([x, x]), t,
                               encoder_hidden_states=torch.cat([null_embedding.to(x.dtype), cond])).sample
        return self._to_eps(classifier_free_guidance(out, self.guidance_scale), z, t)

    @torch.no_grad()
    def __call__(self, z: Tensor, t) -> Tensor:
        x = z.to(self.network.dtype)
        # the text encoder may run in another dtype than the UNet (e.g. a float64 copy of the UNet)
        cond = self._embeddings(self.cond, z.shape[0]).to(x.dtype)
        if uses_guidance(self.guidance_scale):
            uncond = self._embeddings(self.uncond, z.shape[0]).to(x.dtype)
            out = self.network(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            out = classifier_free_guidance(out, self.guidance_scale)
        else:
            out = self.network(x, t, encoder_hidden_states=cond).sample
        return self._to_eps(out, z, t)


class StableDiffusionXLEpsModel(StableDiffusionEpsModel):
    """A Stable Diffusion XL pipeline's UNet with a text prompt as ``model(z, t) -> eps``: both text encoders' hidden
    states, the second one's pooled embedding and SDXL's size conditioning (``add_time_ids`` for an uncropped image
    of ``size`` pixels a side), with classifier-free guidance as :class:`StableDiffusionEpsModel`. An empty
    negative prompt gives zero unconditional embeddings where the pipeline's ``force_zeros_for_empty_prompt``
    says so, as SDXL's own pipeline does."""

    def __init__(self, pipe, prompt, guidance_scale: float = 1.0, negative_prompt: str = "",
                 allow_v_prediction: bool = False, schedule=None, follow_clipping: bool = True, size: int = 1024):
        _EpsBase.__init__(self, pipe.unet, pipe.scheduler.config, allow_v_prediction, "this pipeline", schedule,
                          follow_clipping)
        self.guidance_scale, self.negative_prompt, self.pipe = guidance_of(guidance_scale), negative_prompt, pipe
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negative = None if negative_prompt == "" else [negative_prompt] * len(prompts)
        with torch.no_grad():
            self.cond, self.uncond, self.pooled, self.uncond_pooled = pipe.encode_prompt(
                prompts, prompts, pipe.unet.device, 1, True, negative_prompt=negative, negative_prompt_2=negative)
        self.time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=self.cond.dtype, device=self.cond.device)

    def _encode(self, prompts: list[str]) -> Tensor:
        return self.uncond

    @property
    def embeddings(self) -> tuple:
        return self.cond, self.uncond, self.pooled, self.uncond_pooled

    def _unet(self, x: Tensor, t, hidden: Tensor, pooled: Tensor) -> Tensor:
        added = {"text_embeds": pooled.to(x.dtype), "time_ids": self.time_ids.expand(x.shape[0], -1).to(x.dtype)}
        return self.network(x, t, encoder_hidden_states=hidden.to(x.dtype), added_cond_kwargs=added).sample

    def conditional(self, z: Tensor, t) -> Tensor:
        x = z.to(self.network.dtype)
        with torch.no_grad():
            out = self._unet(x, t, self._embeddings(self.cond, z.shape[0]), self._embeddings(self.pooled, z.shape[0]))
        return self._to_eps(out, z, t)

    def unconditional(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        x = z.to(self.network.dtype)
        with _frozen(self.network):
            out = self._unet(x, t, null_embedding, self._embeddings(self.uncond_pooled, z.shape[0]))
        return self._to_eps(out, z, t)

    def guided(self, z: Tensor, t, null_embedding: Tensor) -> Tensor:
        x, batch = z.to(self.network.dtype), z.shape[0]
        hidden = torch.cat([null_embedding.to(x.dtype), self._embeddings(self.cond, batch).to(x.dtype)])
        pooled = torch.cat([self._embeddings(self.uncond_pooled, batch), self._embeddings(self.pooled, batch)])
        with torch.no_grad():
            out = self._unet(torch.cat([x, x]), t, hidden, pooled)
        return self._to_eps(classifier_free_guidance(out, self.guidance_scale), z, t)

    @torch.no_grad()
    def __call__(self, z: Tensor, t) -> Tensor:
        if uses_guidance(self.guidance_scale):
            return self.guided(z, t, self._embeddings(self.uncond, z.shape[0]))
        return self.conditional(z, t)
