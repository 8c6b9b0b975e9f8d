"""Stand-in weights of the paper profile: published configurations, hub-cache layout, labels.

The published values below are typed in from the repositories' config files (see the notes on the
reference methods and ``bdia.apps.published.SOURCES``), independently of the tables in ``bdia.apps.published``:
the tests read back what ``write_standins`` wrote to disk, through the libraries that load it.
"""

import json

import pytest
import torch

from bdia.apps import published, standins

pytest.importorskip("diffusers")

PUBLISHED = {
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "unet"): {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "layers_per_block": 2,
        "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5,
        "flip_sin_to_cos": True, "freq_shift": 0},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae"): {
        "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "latent_channels": 4, "layers_per_block": 2,
        "sample_size": 512, "scaling_factor": 0.18215},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "text_encoder"): {
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "scheduler"): {
        "_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "clip_sample": False},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "safety_checker"): {
        "architectures": ["StableDiffusionSafetyChecker"], "model_type": "clip", "projection_dim": 768},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "feature_extractor"): {
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True, "resample": 3,
        "size": 224, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]},
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "model_index.json"): {
        "_class_name": "StableDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]},
    ("google/ddpm-cifar10-32", "scheduler_config.json"): {
        "_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "num_train_timesteps": 1000, "clip_sample": True, "trained_betas": None, "variance_type": "fixed_large"},
    ("google/ddpm-cifar10-32", "model_index.json"): {
        "_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]},
    ("google/ddpm-cifar10-32", "."): {
        "sample_size": 32, "in_channels": 3, "out_channels": 3, "block_out_channels": [128, 256, 256, 256],
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 2,
        "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "norm_eps": 1e-6, "norm_num_groups": 32},
    # openai/clip-vit-large-patch14's config.json and preprocessor_config.json (top level)
    ("openai/clip-vit-large-patch14", "."): {"projection_dim": 768, "model_type": "clip"},
    ("openai/clip-vit-large-patch14", "preprocessor_config.json"): {
        "crop_size": 224, "size": 224, "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]},
}


@pytest.fixture(scope="module")
def configs_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins-configs")
    standins.write_standins(out, weights=False)
    return out


def snapshot(out, repo):
    root = out / f"models--{repo.replace('/', '--')}"
    return root / "snapshots" / (root / "refs" / "main").read_text()


def published_file(root, component: str):
    """Where a repository keeps a component's config: a file at the top level, or the folder's config file."""
    if component.endswith(".json"):
        return root / component
    names = {"scheduler": "scheduler_config.json", "feature_extractor": "preprocessor_config.json"}
    return root / component / names.get(component, "config.json")


@pytest.mark.parametrize("repo, component", sorted(PUBLISHED))
def test_written_configs_have_the_published_values(configs_only, repo, component):
    written = json.loads(published_file(snapshot(configs_only, repo), component).read_text())
    for key, value in PUBLISHED[(repo, component)].items():
        assert written[key] == value, (repo, component, key)
    if not component.endswith(".json"):
        assert (snapshot(configs_only, repo) / component / standins.MARKER).is_file()


@pytest.fixture(scope="module")
def cifar10_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins-cifar10")
    standins.write_standins(out, repositories=[published.CIFAR10_MODEL])
    return snapshot(out, published.CIFAR10_MODEL)


def test_the_cifar10_ddpm_is_a_legacy_pickle_as_published(cifar10_weights):
    files = {p.name for p in cifar10_weights.iterdir()}
    assert "diffusion_pytorch_model.bin" in files and not any(name.endswith(".safetensors") for name in files)
    state = torch.load(cifar10_weights / "diffusion_pytorch_model.bin", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    attention = [k for k in state if ".attentions." in k]
    assert attention and any(k.endswith(".query.weight") for k in attention)
    assert not any(".to_q." in k or ".to_out." in k for k in attention)  # the names of early diffusers
    # diffusers converts them when it loads the file: every weight arrives where the current UNet expects it
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(cifar10_weights)
    loaded = unet.state_dict()
    query = next(k for k in attention if k.endswith(".query.weight"))
    assert torch.equal(loaded[query.replace(".query.", ".to_q.")], state[query])
    assert len(loaded) == len(state)


def test_the_tokenizer_has_the_published_vocabulary_size_and_length(configs_only):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(snapshot(configs_only, published.SD_MODEL) / "tokenizer")
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    ids = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407
    assert max(ids) == 49407 and 1 < ids.index(49407) < 20  # words merge into multi-byte tokens


def test_the_cifar10_ddpm_resolves_offline_from_the_hub_cache(tmp_path):
    import os
    import subprocess
    import sys

    standins.write_standins(tmp_path, repositories=[published.CIFAR10_MODEL])
    # huggingface_hub reads HF_HUB_CACHE when it is imported: run the paper code's calls in a fresh process
    script = (
        "import torch\n"
        "from bdia.apps import published, standins\n"
        "from bdia.diffusers import load_unet\n"
        "from bdia.apps.digits import shipped_model_path\n"
        "unet = load_unet(published.CIFAR10_MODEL)\n"
        "assert type(unet).__name__ == 'UNet2DModel' and sum(p.numel() for p in unet.parameters()) > 35e6\n"
        "assert unet(torch.randn(1, 3, 32, 32), 10).sample.shape == (1, 3, 32, 32)\n"
        "print(standins.weights_label(published.CIFAR10_MODEL), '|', standins.weights_label(published.SD_MODEL), '|',\n"
        "      standins.weights_label(shipped_model_path()))\n")
    env = {**os.environ, **standins.environment(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the stand-in is labelled; a repository not written here, and the shipped digits model, are not
    assert done.stdout.strip().splitlines()[-1] == "stand-in (random) | trained | trained"


def test_standins_command(tmp_path, capsys, monkeypatch):
    from bdia.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["standins", "--out", str(blocker / "x")]) == 2
    assert "cannot create" in capsys.readouterr().err


@pytest.mark.parametrize("model, low, high", [("SD35_MEDIUM", 2.0e9, 2.6e9), ("FLUX_DEV", 11.5e9, 12.2e9)])
def test_the_published_flow_transformers_build_and_take_the_adapters_inputs(model, low, high):
    """Chapter 7's paper profile: the published SD3.5 Medium and FLUX.1-dev transformers, built from their configs on
    the meta device (no memory), have the published sizes, and the grids their schedulers describe are the core's."""
    import diffusers

    import bdia

    config = getattr(published, f"{model}_TRANSFORMER")
    cls = getattr(diffusers, config["_class_name"])
    with torch.device("meta"):
        transformer = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    assert low < sum(p.numel() for p in transformer.parameters()) < high
    vae = getattr(published, f"{model}_VAE")
    packed = 4 if model == "FLUX_DEV" else 1  # FLUX packs 2x2 latents into its tokens
    assert transformer.config.in_channels == vae["latent_channels"] * packed
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**{k: v for k, v in getattr(
        published, f"{model}_SCHEDULER").items() if not k.startswith("_")})
    mu = 1.15 if scheduler.config.use_dynamic_shifting else None
    scheduler.set_timesteps(28, mu=mu)
    ours = bdia.FlowMatchSchedule.from_diffusers_config(scheduler.config, mu=mu)
    assert ours.timesteps(28).tolist() == scheduler.sigmas.double().tolist()


def test_the_clip_scorer_is_vit_l_14_with_a_tokenizer_beside_it(configs_only):
    from transformers import CLIPConfig, CLIPTokenizer

    root = snapshot(configs_only, published.CLIP_MODEL)
    config = CLIPConfig.from_pretrained(root)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (1024, 24, 14, 224)
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (768, 12, 49408)
    assert vision.hidden_act == text.hidden_act == "quick_gelu"
    assert len(CLIPTokenizer.from_pretrained(root)) == 49408
    assert standins.is_standin(root / "config.json")
