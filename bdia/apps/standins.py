"""Stand-in weights for the ``paper`` profile: the published architectures with seeded random weights.

``python -m bdia standins --out DIR`` writes, with no network access:

* a Hugging Face hub cache in ``DIR`` (the layout ``huggingface_hub`` resolves with
  ``HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1``) holding, under the repository ids the paper profile loads by
  default, models with the published configurations of those repositories and random weights, in the files
  and formats those repositories hold, so the paper code loads them through the same code paths as the real
  ones: Stable Diffusion 1.5 (UNet, VAE, CLIP text encoder and safety checker as float32 safetensors with an
  ``fp16`` variant beside each; a CLIP tokenizer with a vocabulary of the published size; the published
  scheduler, feature-extractor and pipeline configs) and the CIFAR10 DDPM (a pickled float32
  ``diffusion_pytorch_model.bin`` with the legacy attention key names ``query``/``key``/``value``/``proj_attn``,
  which diffusers converts when it loads it, and the published scheduler config), and the CLIP ViT-L/14 that
  scores edits (model, tokenizer and preprocessor at the top level of its repository);
* ``DIR/edm/edm-cifar10-32x32-cond-vp-standin.pkl``: a class-conditional network with the interface of NVlabs'
  EDM checkpoints (``label_dim``, ``sigma_min``, ``sigma_max``, ``forward(x, sigma, class_labels)``), for
  ``--edm-model``;
* ``DIR/local/tiny-sd3`` and ``DIR/local/tiny-flux``: the miniature SD3 and FLUX pipelines saved as model folders,
  which chapter 7's paper profile loads in the dry run (the published transformers are too large for one);
* ``DIR/torch/hub/checkpoints/inception-2015-12-05.pt``: a TorchScript stand-in for the FID detector
  with the call signature of the real one (uint8 NCHW images in, 2048-d features out), found by
  :func:`bdia.apps.fid.load_detector` with ``TORCH_HOME=DIR/torch``;
* ``DIR/torch/hub/checkpoints/vgg16-397923af.pth`` and ``vgg.pth``: random VGG-16 features and LPIPS heads under
  the names ``torch.hub`` caches the published files as, found by :meth:`bdia.apps.lpips.LPIPS.from_hub`;
* ``DIR/reference``: a folder of stand-in reference images (``--reference DIR/reference``).

Every model folder carries a marker file (:data:`MARKER`) and the detector an extra file of the same
name, so every result computed from them is labelled ``weights: stand-in (random)`` (:func:`weights_label`).
They exercise the unchanged paper code at the published sizes; their images and scores mean nothing.

The configurations are those of :mod:`bdia.apps.published`; where each value comes from is recorded there
(:data:`bdia.apps.published.SOURCES`) and in the ``bdia-standin.json`` marker of every folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .labels import MARKER, STANDIN_LABEL, TRAINED_LABEL, is_standin, weights_label
from .published import CIFAR10_MODEL, DETECTOR_FILE, REPOSITORIES, SD_TEXT_ENCODER, SOURCES, WEIGHT_FORMATS

__all__ = ["MARKER", "STANDIN_LABEL", "TRAINED_LABEL", "write_standins", "write_detector", "write_reference",
           "write_edm_standin", "write_local_pipelines",
           "write_lpips_standins", "EDMStandIn", "EDM_FILE", "weights_label", "is_standin",
           "definition_hash", "environment"]


_VERSION = 3  # bump when the way stand-ins are built changes


def definition_hash() -> str:
    """A hash of everything that defines the stand-ins (configs, seeds, the code's version)."""
    blob = json.dumps({"repos": REPOSITORIES, "version": _VERSION}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def environment(out) -> dict:
    """The environment variables under which the paper code finds the stand-ins in ``out``."""
    out = Path(out).resolve()
    return {"HF_HUB_CACHE": str(out), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(out / "torch")}


# -- markers and labels -------------------------------------------------------------------------------


def _marker(what: str, repo: str | None = None) -> dict:
    return {"bdia": "stand-in weights: the published architecture with seeded random weights; every image and "
                    "score computed from them is meaningless", "what": what, "repository": repo,
            "sources": SOURCES.get(repo or "detector"), "definition": definition_hash()}


# -- writing ------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level BPE: every byte maps to a printable character
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _write_tokenizer(folder: Path, config: dict, vocab_size: int) -> None:
    """A CLIP byte-level BPE tokenizer with ``vocab_size`` entries and synthetic merges of byte pairs."""
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    num_merges = vocab_size - len(vocab) - 2
    # letters first, so that prompts of lowercase words merge into multi-character tokens
    order = sorted(symbols, key=lambda s: (not s.isalpha() or not s.islower(), s))
    merges = []
    for first in order:
        for second in order:
            if len(merges) == num_merges:
                break
            final = len(merges) % 2 == 1  # alternate word-final and inner merges
            token = first + second + ("</w>" if final else "")
            merges.append(f"{first} {second}</w>" if final else f"{first} {second}")
            vocab[token] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    if len(vocab) != vocab_size:
        raise AssertionError(f"tokenizer vocabulary has {len(vocab)} entries, expected {vocab_size}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}, indent=2))


#: diffusers' names of an attention block's projections, and the names early diffusers published them under
_LEGACY_ATTENTION = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}


def _save_model(model, folder: Path, seed: int, weight_format: str) -> None:
    """The weights as the repository holds them: float32 safetensors with an fp16 variant (``safetensors+fp16``) or
    without (``safetensors``), or (``legacy-bin``) a float32 pickle with the legacy attention key names."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    stem = "diffusion_pytorch_model" if hasattr(model, "save_config") else "model"
    if weight_format == "legacy-bin":
        legacy = {}
        for key, value in state.items():
            for new, old in _LEGACY_ATTENTION.items():
                key = key.replace(new, old) if ".attentions." in key else key
            legacy[key] = value
        torch.save(legacy, folder / f"{stem}.bin")
        return
    metadata = {"format": "pt", "bdia": f"stand-in, seed {seed}"}
    save_file(state, str(folder / f"{stem}.safetensors"), metadata=metadata)
    if weight_format == "safetensors":
        return
    save_file({k: v.to(torch.float16) for k, v in state.items()}, str(folder / f"{stem}.fp16.safetensors"),
              metadata=metadata)


def _write_component(folder: Path, key: str, config: dict, seed: int, weights: bool = True,
                     weight_format: str = "safetensors+fp16") -> None:
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if config.get("_class_name") in ("UNet2DConditionModel", "UNet2DModel", "AutoencoderKL"):
        import diffusers

        cls = getattr(diffusers, config["_class_name"])
        fields = {k: v for k, v in config.items() if not k.startswith("_")}
        if weights:
            model = cls.from_config(fields)
            model.save_config(folder)  # the published fields, plus diffusers' defaults for the rest
            _save_model(model, folder, seed, weight_format)
        else:
            (folder / "config.json").write_text(json.dumps(config, indent=2))
    elif config.get("model_type") == "clip_text_model":
        from transformers import CLIPTextConfig, CLIPTextModel

        text_config = CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"})
        text_config.architectures = config["architectures"]
        text_config.save_pretrained(folder)
        if weights:
            _save_model(CLIPTextModel(text_config), folder, seed, weight_format)
    elif config.get("architectures") == ["CLIPModel"]:
        from transformers import CLIPConfig, CLIPModel

        clip = CLIPConfig(text_config=config["text_config"], vision_config=config["vision_config"],
                          **{k: v for k, v in config.items() if k not in ("text_config", "vision_config")})
        clip.save_pretrained(folder)
        if weights:
            _save_model(CLIPModel(clip), folder, seed, weight_format)
    elif config.get("architectures") == ["StableDiffusionSafetyChecker"]:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPConfig

        clip = CLIPConfig(text_config=config["text_config"], vision_config=config["vision_config"],
                          **{k: v for k, v in config.items() if k not in ("text_config", "vision_config")})
        clip.save_pretrained(folder)
        if weights:
            _save_model(StableDiffusionSafetyChecker(clip), folder, seed, weight_format)
    elif config.get("tokenizer_class") == "CLIPTokenizer":
        _write_tokenizer(folder, config, SD_TEXT_ENCODER["vocab_size"])
    elif "image_processor_type" in config:
        (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
    elif config.get("_class_name", "").endswith("Scheduler"):
        (folder / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    else:
        raise ValueError(f"no writer for component {key!r}")
    (folder / MARKER).write_text(json.dumps(_marker(key), indent=2))


def _write_repository(out: Path, repo: str, components: dict, seed: int, progress, weights: bool) -> Path:
    commit = hashlib.sha1(f"{repo}:{definition_hash()}".encode()).hexdigest()
    root = out / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for offset, (key, config) in enumerate(components.items()):
        progress(f"{repo}: {key}")
        if key == "model_index.json":
            (snapshot / key).write_text(json.dumps(config, indent=2))
        elif key == "scheduler" and repo == CIFAR10_MODEL:  # the DDPM repository keeps it at the top level
            (snapshot / "scheduler_config.json").write_text(json.dumps(config, indent=2))
        else:
            folder = snapshot if key.startswith(".") else snapshot / key  # "." and ".name": the top level
            _write_component(folder, key, config, seed + offset, weights, WEIGHT_FORMATS[repo])
    (snapshot / MARKER).write_text(json.dumps(_marker("repository", repo), indent=2))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


class _StandInDetector(torch.nn.Module):
    """Same call as NVlabs' Inception detector: uint8 (N, 3, H, W) to (N, 2048) float32; a random projection."""

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.projection = torch.nn.Parameter(torch.randn(3 * 8 * 8, 2048, generator=gen) / 8.0, requires_grad=False)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1.0
        x = torch.nn.functional.adaptive_avg_pool2d(x, (8, 8)).flatten(1)
        return torch.relu(x @ self.projection)


def write_detector(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    module = torch.jit.script(_StandInDetector(seed))
    path = folder / DETECTOR_FILE
    tmp = path.with_suffix(".tmp")
    torch.jit.save(module, str(tmp), _extra_files={MARKER: json.dumps(_marker("detector"))})
    os.replace(tmp, path)
    return path


class EDMStandIn(torch.nn.Module):
    """A class-conditional network with the interface of NVlabs' EDM checkpoints (``img_resolution``,
    ``img_channels``, ``label_dim``, ``sigma_min``, ``sigma_max``, ``forward(x, sigma, class_labels)`` returning
    ``D(x)``): a random convolution whose output depends on the label, so that a run that drops the labels is seen.
    Importable from bdia, so its pickle loads without NVlabs' code."""

    img_resolution, img_channels, label_dim = 32, 3, 10
    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.05)
            self.conv.bias.zero_()
        self.label_shift = torch.nn.Parameter(torch.randn(self.label_dim, 3, generator=gen) * 0.1, requires_grad=False)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if class_labels is None:  # as EDM's preconditioner does without labels: the first class, silently
            class_labels = torch.zeros(x.shape[0], self.label_dim, device=x.device)
            class_labels[:, 0] = 1
        sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        shift = (class_labels.to(x.dtype) @ self.label_shift.to(x.dtype)).reshape(-1, 3, 1, 1)
        return (x + self.conv(x) * sigma / (1 + sigma)) / (1 + sigma**2) ** 0.5 + shift


#: the EDM stand-in's file, under ``DIR/edm``
EDM_FILE = "edm-cifar10-32x32-cond-vp-standin.pkl"


def write_lpips_standins(folder: Path, seed: int) -> dict:
    """Random VGG-16 features (torchvision's key layout, without its classifier, which LPIPS does not use) and LPIPS
    heads under the file names ``torch.hub`` caches the published ones as, with the stand-in marker beside them."""
    from .lpips import LPIPS, LPIPS_VGG_URL, VGG16_URL

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    lpips = LPIPS()
    states = {VGG16_URL: {f"features.{k}": v for k, v in lpips.features.state_dict().items()},
              LPIPS_VGG_URL: {f"lin{k}.model.1.weight": head.detach().clone() for k, head in enumerate(lpips.heads)}}
    paths = {}
    for url, state in states.items():
        path = folder / url.rsplit("/", 1)[1]
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        paths[url] = str(path.resolve())
    (folder / MARKER).write_text(json.dumps(_marker("VGG-16 features and LPIPS heads"), indent=2))
    return paths


def write_edm_standin(folder: Path, seed: int) -> Path:
    """A pickled EDM-style checkpoint (``{"ema": EDMStandIn}``) for ``--edm-model``, with the stand-in marker."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EDM_FILE
    with open(path.with_suffix(".tmp"), "wb") as f:
        pickle.dump({"ema": EDMStandIn(seed)}, f)
    os.replace(path.with_suffix(".tmp"), path)
    (folder / MARKER).write_text(json.dumps(_marker("EDM network (class-conditional)"), indent=2))
    return path


def write_local_pipelines(folder: Path, seed: int) -> dict:
    """The miniature SD3 and FLUX pipelines (``bdia.diffusers.tiny_stable_diffusion_3`` and ``tiny_flux``: the real
    classes, random weights) saved as local model folders, marked as stand-ins: chapter 7's paper profile loads them
    through the same ``load_pipeline`` as SD3.5 Medium and FLUX.1-dev, whose 2.5 and 12 billion parameters are too
    large for a dry run on a CPU."""
    from ..diffusers import tiny_flux, tiny_stable_diffusion_3

    paths = {}
    for name, make in (("tiny-sd3", tiny_stable_diffusion_3), ("tiny-flux", tiny_flux)):
        path = folder / name
        make(seed=seed).save_pretrained(path)
        (path / MARKER).write_text(json.dumps(_marker(f"miniature {name} pipeline (random weights)"), indent=2))
        paths[name] = str(path.resolve())
    return paths


def write_reference(folder: Path, seed: int, count: int = 64) -> None:
    """``count`` 32x32 PNG images (smooth random colour fields) standing in for a reference data set."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=gen)
    images = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    for k, image in enumerate((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(folder / f"{k:05d}.png")
    (folder / MARKER).write_text(json.dumps(_marker("reference images"), indent=2))


def write_standins(out, seed: int = 0, progress: bool = True, repositories=None, weights: bool = True) -> dict:
    """Write every stand-in into ``out`` (see the module docstring); returns the paths and the environment.

    Nothing is downloaded. A folder whose stamp matches :func:`definition_hash` is left as it is.
    ``repositories`` (default: all of :data:`REPOSITORIES`) and ``weights=False`` (configs and tokenizer only)
    serve quick checks of the configurations.
    """
    out = Path(out)
    if repositories is not None or not weights:  # a partial write: never stamped as complete
        for offset, repo in enumerate(REPOSITORIES):
            if repositories is None or repo in repositories:
                _write_repository(out, repo, REPOSITORIES[repo], seed + 100 * offset, lambda what: None, weights)
        return {"hub_cache": str(out.resolve()), "environment": environment(out)}
    stamp = out / "definition.json"
    paths = {"hub_cache": str(out.resolve()), "detector": str((out / "torch" / "hub" / "checkpoints" / DETECTOR_FILE)
                                                                .resolve()),
             "reference": str((out / "reference").resolve()), "edm_model": str((out / "edm" / EDM_FILE).resolve()),
             "pipelines": {name: str((out / "local" / name).resolve()) for name in ("tiny-sd3", "tiny-flux")},
             "environment": environment(out)}
    if stamp.is_file() and json.loads(stamp.read_text()).get("definition") == definition_hash():
        return paths
    say = print if progress else (lambda *_: None)
    out.mkdir(parents=True, exist_ok=True)
    for offset, (repo, components) in enumerate(REPOSITORIES.items()):
        _write_repository(out, repo, components, seed + 100 * offset, lambda what: say(f"writing {what}", flush=True),
                          True)
    say("writing the stand-in FID detector, LPIPS networks, reference images and EDM network", flush=True)
    write_detector(out / "torch" / "hub" / "checkpoints", seed)
    write_lpips_standins(out / "torch" / "hub" / "checkpoints", seed)
    write_reference(out / "reference", seed)
    write_edm_standin(out / "edm", seed)
    write_local_pipelines(out / "local", seed)
    stamp.write_text(json.dumps({"definition": definition_hash(), "seed": seed, **paths}, indent=2))
    return paths
