"""Controls for edits: the target branch of an edit takes the source branch's features or attention maps.

An edit with a control carries two branches in one batch (``bdia.sample(..., control=...)``, or
``BDIAEditPipeline.__call__(..., control=...)``): the source branch regenerates the source from the inversion state,
the target branch is the edit, and inside the network the target's rows take the source's decoder features or
attention maps for the first part of the steps. The control acts on the network only, through forward hooks and
diffusers' attention-processor API, so it composes with every method of the registry; the sampler runs unchanged.

- :class:`FeatureInjection`: plug-and-play (Tumanyan et al., CVPR 2023): decoder ResBlock features for the first
  ``features`` of the steps and decoder self-attention maps for the first ``self_attention``. Needs no text: it
  works on any diffusers UNet, the class-conditional digits model included (which has no attention layers, so
  there it injects features only), and on SD3's and FLUX's transformers, whose joint attention values it shares.
- :class:`PromptToPrompt`: prompt-to-prompt (Hertz et al., ICLR 2023): cross-attention maps, replaced for a word
  swap or refined (the tokens the prompts share) where words are added, for the first ``cross_attention`` of the
  steps, and the self-attention maps of small feature maps for the first ``self_attention``. Needs the prompts'
  tokens, which the text pipelines give it (Stable Diffusion 1.x, 2.x and XL).

A fraction counts the traversed grid from its noisy end: with ``K`` steps, the network calls above the
``round(fraction * K)``-th grid time are controlled. The source branch's rows are never changed, so it returns the
plain reconstruction, to the rounding that a larger batch can bring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidTypeError, InvalidValueError

__all__ = ["FeatureInjection", "PromptToPrompt", "token_columns"]


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidValueError(f"{name} is the fraction of the steps to control, a number in [0, 1]; got {value!r}")
    return float(value)


class _Run:
    """One controlled run: the traversed grid, the batch of one branch, the time of the network call in progress."""

    def __init__(self, timesteps, batch: int):
        self.ts = [float(t) for t in timesteps]
        self.batch = int(batch)
        self.t = None

    def active(self, fraction: float) -> bool:
        n = round(fraction * (len(self.ts) - 1))
        return n > 0 and self.t is not None and self.t > self.ts[n]

    def branches(self, x: Tensor, per_row: int = 1) -> Tensor:
        """``x`` (rows, ...) viewed as (groups, 2 branches, batch, ...): each classifier-free-guidance group holds
        the source rows, then the target rows."""
        rows = x.shape[0] // per_row
        if x.shape[0] % per_row or rows % (2 * self.batch):
            raise InvalidValueError(
                f"the network saw {rows} rows for an edit of {self.batch}: a control needs a model that conditions "
                "a source and a target branch (source rows first) in every call")
        return x.view(rows // (2 * self.batch), 2, self.batch, per_row, *x.shape[1:])


class _ControlledModel:
    """The model, telling the run the time of each network call (its branches too: null-text's ``guided``)."""

    def __init__(self, model, run: _Run):
        self.model, self._run = model, run

    def __call__(self, z: Tensor, t) -> Tensor:
        self._run.t = float(t)
        try:
            return self.model(z, t)
        except InvalidValueError as error:
            raise InvalidValueError(f"{error}: with a control the model sees both branches, {z.shape[0]} rows; "
                                    "condition the source's rows, then the target's") from error

    def __getattr__(self, name):
        if name in ("model", "_run"):
            raise AttributeError(name)
        attr = getattr(self.model, name)
        if name not in ("conditional", "unconditional", "guided"):
            return attr

        def at_time(z, t, *args, **kwargs):
            self._run.t = float(t)
            return attr(z, t, *args, **kwargs)

        return at_time


class _ControlledAttention:
    """An attention processor that lets the control edit the attention maps; the layer's own processor runs
    whenever the control is idle, so uncontrolled steps compute exactly as without a control."""

    def __init__(self, original, edit):
        self.original, self.edit = original, edit

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        cross = encoder_hidden_states is not None
        queries = hidden_states.shape[2] * hidden_states.shape[3] if hidden_states.dim() == 4 else hidden_states.shape[1]
        if not self.edit.active(cross, queries):
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, temb=temb, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.dim() == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        context = encoder_hidden_states if cross else hidden_states
        mask = attn.prepare_attention_mask(attention_mask, context.shape[1], hidden_states.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
            context = context if cross else hidden_states
        if cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key, value = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
        probs = self.edit.apply(attn.get_attention_scores(query, key, mask), attn.heads, cross)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))
        if spatial:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class _Control:
    """What the controls share: binding to a model's network for one run (hooks and attention processors in,
    and out again afterwards). Subclasses name their layers and say how a target row takes the source's."""

    def _feature_layers(self, network) -> list[str]:
        return []

    def _attention_layers(self, network) -> list[str]:
        """Names of the attention layers (modules) whose maps the control edits."""
        return []

    def _feature_fraction(self) -> float:
        """The share of the steps, from the noisy end, for which the target takes the source's features."""
        return 0.0

    def _attention_fraction(self, cross: bool) -> float:
        """The share of the steps for which the target takes the source's cross- or self-attention maps."""
        return 0.0

    def _check(self, network) -> None:
        pass

    def with_prompts(self, tokenizer, source: list[str], target: list[str]):
        """This control for an edit from ``source`` to ``target`` prompts (one per image), as a text pipeline
        calls it; a control that reads no text returns itself."""
        return self

    @contextlib.contextmanager
    def bind(self, model, timesteps, batch: int):
        """Within the block, ``model``'s network is controlled for one run over ``timesteps`` (the traversed
        grid, noisy end first) with ``batch`` samples per branch; yields the model to call."""
        network = getattr(model, "network", None)
        if not isinstance(network, torch.nn.Module):
            raise InvalidTypeError(f"{type(self).__name__} controls a diffusers network: give a model with a "
                                   "network (UNetEpsModel, StableDiffusionEpsModel, SD3VelocityModel, "
                                   "FluxVelocityModel), not "
                                   f"{type(getattr(model, 'model', model)).__name__}")
        self._check(network)
        run = _Run(timesteps, batch)
        modules = dict(network.named_modules())
        handles = [modules[name].register_forward_hook(self._feature_hook(run)) for name in self._feature_layers(network)]
        layers = _attention_modules(network)
        saved = {name: layers[name].processor for name in self._attention_layers(network)}
        for name, processor in saved.items():
            layers[name].set_processor(_ControlledAttention(processor, _AttentionEdit(self, run)))
        try:
            yield _ControlledModel(model, run)
        finally:
            for handle in handles:
                handle.remove()
            for name, processor in saved.items():
                layers[name].set_processor(processor)

    def _feature_hook(self, run: _Run):
        def hook(module, inputs, output):
            if not run.active(self._feature_fraction()):
                return None
            out = output.clone()
            view = run.branches(out)
            view[:, 1] = view[:, 0]
            return out

        return hook

    def _groups(self, view) -> slice:
        return slice(None)

    def _controls(self, cross: bool, queries: int) -> bool:
        return True


class _AttentionEdit:
    """A control's edit of one attention layer's maps during one run."""

    def __init__(self, control: _Control, run: _Run):
        self.control, self.run = control, run

    def active(self, cross: bool, queries: int) -> bool:
        fraction = self.control._attention_fraction(cross)
        return fraction > 0 and self.run.active(fraction) and self.control._controls(cross, queries)

    def apply(self, probs: Tensor, heads: int, cross: bool) -> Tensor:
        out = probs.clone()
        view = self.run.branches(out, heads)
        self.control._replace(view[self.control._groups(view)], cross)
        return out


def _attention_modules(network) -> dict:
    """The network's attention layers by name (those that take a processor: diffusers' attention-processor API)."""
    return {name: module for name, module in network.named_modules()
            if callable(getattr(module, "set_processor", None)) and hasattr(module, "processor")}


def _joint_values(network) -> list[str]:
    """The image-stream value projections of a transformer's joint attention blocks (SD3's, FLUX's), if any."""
    return [name for name, _ in network.named_modules()
            if name.startswith("transformer_blocks.") and name.endswith(".attn.to_v")]


def _resnets(network, prefix: str = "up_blocks") -> list[str]:
    return [name for name, module in network.named_modules()
            if name.startswith(prefix) and ".resnets." in name and name.count(".") == 3]


@dataclass(frozen=True)
class FeatureInjection(_Control):
    """Plug-and-play feature injection (Tumanyan et al., CVPR 2023): the edit takes the source branch's decoder
    ResBlock features (``layers``; default ``up_blocks.1.resnets.1``, the paper's layer 4 of Stable Diffusion's
    decoder) for the first ``features`` of the steps (default 0.8, the paper's) and the decoder's self-attention
    maps (``attention_layers``; default all decoder self-attention after the first, the paper's layers 4 to 11)
    for the first ``self_attention`` (default 0.5). Both classifier-free-guidance branches of the target take
    them. Works on any diffusers UNet; one without attention layers takes the features only.

    On a rectified-flow transformer (SD3's, FLUX's) the features are attention values, as RF-Solver-Edit shares
    them: by default the edit takes the source branch's image-stream values of every joint attention block
    (``transformer_blocks.<i>.attn.to_v``) for the first ``features`` of the steps (RF-Solver-Edit shares them for
    a few steps: ``features=0.2`` comes close); ``layers`` may name others, e.g. FLUX's single-stream
    ``single_transformer_blocks.<i>.attn.to_v`` (text and image tokens together)."""

    features: float = 0.8
    self_attention: float = 0.5
    layers: tuple | None = None  #: None: the network's default (see above)
    attention_layers: tuple | None = None

    def __post_init__(self):
        _check_fraction("features", self.features)
        _check_fraction("self_attention", self.self_attention)
        if self.layers is not None:
            object.__setattr__(self, "layers", (self.layers,) if isinstance(self.layers, str) else tuple(self.layers))

    def _feature_layers(self, network) -> list[str]:
        modules, joint = dict(network.named_modules()), _joint_values(network)
        layers = self.layers if self.layers is not None else joint or ("up_blocks.1.resnets.1",)
        missing = [name for name in layers if name not in modules]
        if missing:
            kind, known = ("joint attention values", joint) if joint else ("decoder ResBlocks", _resnets(network))
            raise InvalidValueError(f"this network has no layer {', '.join(missing)}; its {kind} are "
                                    f"{', '.join(known) or 'none'}")
        return list(layers)

    def _attention_layers(self, network) -> list[str]:
        names = list(_attention_modules(network))
        if self.attention_layers is not None:
            missing = [name for name in self.attention_layers if name not in names]
            if missing:
                raise InvalidValueError(f"this network has no attention layer {', '.join(missing)}; its decoder's are "
                                        f"{', '.join(n for n in names if n.startswith('up_blocks')) or 'none'}")
            return list(self.attention_layers)
        decoder_self = [name for name in names if name.startswith("up_blocks") and name.endswith(".attn1")]
        return decoder_self[1:]

    def _feature_fraction(self) -> float:
        return self.features

    def _attention_fraction(self, cross: bool) -> float:
        return 0.0 if cross else self.self_attention

    def _replace(self, view, cross: bool) -> None:
        view[:, 1] = view[:, 0]


def token_columns(source_ids, target_ids, mode: str | None = None) -> tuple[list[int], list[int], str]:
    """``(target columns, source columns, mode)``: which cross-attention columns of the target take which of the
    source's. ``"replace"`` (a word swap: as many tokens in both prompts) maps every column to itself; ``"refine"``
    maps the tokens the prompts share, aligned as a diff aligns them (:mod:`difflib`), and leaves new tokens their
    own maps. ``None`` picks replace where the prompts have as many tokens, else refine."""
    source_ids, target_ids = [int(i) for i in source_ids], [int(i) for i in target_ids]
    if len(source_ids) != len(target_ids):
        raise InvalidValueError(f"the prompts' token sequences must be padded to one length (the text encoder's), got "
                                f"{len(source_ids)} and {len(target_ids)}")
    same_length = _content_length(source_ids) == _content_length(target_ids)
    mode = mode or ("replace" if same_length else "refine")
    if mode == "replace":
        if not same_length:
            raise InvalidValueError("mode='replace' swaps words token for token and needs prompts of as many tokens "
                                    f"({_content_length(source_ids)} and {_content_length(target_ids)} here); use "
                                    "mode='refine' where words are added")
        columns = list(range(len(target_ids)))
        return columns, columns, mode
    if mode != "refine":
        raise InvalidValueError(f"mode must be 'replace', 'refine' or None (pick by the token counts), got {mode!r}")
    matcher = difflib.SequenceMatcher(a=source_ids, b=target_ids, autojunk=False)
    target, source = [], []
    for block in matcher.get_matching_blocks():
        source += range(block.a, block.a + block.size)
        target += range(block.b, block.b + block.size)
    return target, source, mode


def _content_length(ids: list[int]) -> int:
    """Tokens up to and including the first end-of-text token (the last distinct id before the padding)."""
    end = len(ids)
    while end > 1 and ids[end - 1] == ids[end - 2]:
        end -= 1
    return end


@dataclass(frozen=True)
class PromptToPrompt(_Control):
    """Prompt-to-prompt attention control (Hertz et al., ICLR 2023) for text-conditioned UNets: the edit's
    cross-attention maps are the source's (``mode``: ``"replace"`` for a word swap, ``"refine"`` where words are
    added, ``None`` to pick by the token counts; see :func:`token_columns`) for the first ``cross_attention`` of the
    steps (default 0.8), and the self-attention maps of feature maps of at most ``self_attention_max_tokens``
    positions (default 16 x 16) are the source's for the first ``self_attention`` (default 0.4); the defaults of
    the paper's notebooks. As there, only the conditional branch of classifier-free guidance is controlled.
    ``tokens``: the source and target prompts' token ids, padded to the text encoder's length; the text pipelines
    fill them in (:meth:`with_tokens`). Word reweighting and local blending are not implemented."""

    cross_attention: float = 0.8
    self_attention: float = 0.4
    mode: str | None = None
    self_attention_max_tokens: int = 16 * 16
    tokens: tuple | None = None

    def __post_init__(self):
        _check_fraction("cross_attention", self.cross_attention)
        _check_fraction("self_attention", self.self_attention)
        if self.tokens is not None:  # a bad mode or pair of prompts fails here, not mid-run
            target, source, _ = token_columns(*self.tokens, self.mode)
            object.__setattr__(self, "_columns", (torch.tensor(target), torch.tensor(source)))

    def with_tokens(self, source_ids, target_ids) -> "PromptToPrompt":
        """This control for a source and a target prompt (their token ids, padded alike)."""
        return dataclasses.replace(self, tokens=(tuple(int(i) for i in source_ids),
                                                 tuple(int(i) for i in target_ids)))

    def with_prompts(self, tokenizer, source: list[str], target: list[str]) -> "PromptToPrompt":
        if len(set(source)) > 1 or len(set(target)) > 1:
            raise InvalidValueError("PromptToPrompt maps one source prompt's tokens onto one target prompt's: edit a "
                                    "batch of images from one prompt to one other")

        def ids(text):
            return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                             truncation=True).input_ids

        return self.with_tokens(ids(source[0]), ids(target[0]))

    def _check(self, network) -> None:
        if self.tokens is None:
            raise InvalidValueError("PromptToPrompt needs the source and target prompts' tokens: pass it to a text "
                                    "pipeline (BDIAEditPipeline), or give control.with_tokens(source_ids, target_ids)")
        if not any(getattr(m, "is_cross_attention", False) for m in _attention_modules(network).values()):
            raise InvalidValueError("PromptToPrompt edits cross-attention maps, and this network has no "
                                    "cross-attention (it is not conditioned on text); use FeatureInjection")

    def _attention_layers(self, network) -> list[str]:
        return list(_attention_modules(network))

    def _attention_fraction(self, cross: bool) -> float:
        return self.cross_attention if cross else self.self_attention

    def _controls(self, cross: bool, queries: int) -> bool:
        return cross or queries <= self.self_attention_max_tokens

    def _groups(self, view) -> slice:
        return slice(view.shape[0] - 1, None)  # the conditional group (the last), or the only one

    def _replace(self, view, cross: bool) -> None:
        if not cross:
            view[:, 1] = view[:, 0]
            return
        target, source = (c.to(view.device) for c in self._columns)
        if target.numel() != view.shape[-1] or not torch.equal(target, source):
            view[:, 1, ..., target] = view[:, 0, ..., source]
        else:
            view[:, 1] = view[:, 0]
