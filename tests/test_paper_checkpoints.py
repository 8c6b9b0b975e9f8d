"""What the paper profile meets on the real checkpoints: the noise schedule read with the model (never a default),
class-conditional EDM checkpoints sampled with labels, models pinned by the content of their weights in any format,
the fp16 variant for half precision, and x0 clipping on request."""

import logging
import warnings

import pytest
import torch

import bdia
from bdia.apps import fid, published, standins

pytest.importorskip("diffusers")
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from bdia.diffusers import ModelNotAvailableError, load_scheduler_config, load_unet  # noqa: E402


def tiny_unet(channels: int = 3) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       norm_num_groups=4, layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


@pytest.fixture(autouse=True)
def stand_in_detector(tmp_path, monkeypatch):
    """The paper profile's detector, as a stand-in in a private torch hub (no download)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    standins.write_detector(tmp_path / "torch" / "hub" / "checkpoints", 0)
    (tmp_path / "ref").mkdir()
    standins.write_reference(tmp_path / "ref", 0, count=8)


def paper_config(tmp_path, model, **kw):
    kw.setdefault("reference", str(tmp_path / "ref"))
    return fid.FIDConfig(out_dir=tmp_path / "out", profile="paper", model=str(model), num_samples=8, batch_size=4,
                         budgets=[4], progress=False, **kw)


def test_a_model_without_its_scheduler_config_is_refused_not_given_a_default(tmp_path):
    tiny_unet().save_pretrained(tmp_path / "unet")
    with pytest.raises(FileNotFoundError, match="has no scheduler_config.json"):
        fid.FIDSetup(paper_config(tmp_path, tmp_path / "unet"))
    # with the model's own schedule beside it, that schedule is the one sampled with
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_config(tmp_path / "unet")
    setup = fid.FIDSetup(paper_config(tmp_path, tmp_path / "unet"))
    cosine = bdia.VPSchedule.from_diffusers_config({"beta_schedule": "squaredcos_cap_v2"})
    assert torch.equal(setup.schedule.alphas_cumprod, cosine.alphas_cumprod)
    assert not torch.equal(setup.schedule.alphas_cumprod, bdia.VPSchedule.ddpm().alphas_cumprod)


def test_a_cached_model_whose_scheduler_config_is_missing_offline_is_an_error(tmp_path, monkeypatch):
    standins.write_standins(tmp_path, repositories=[published.CIFAR10_MODEL], weights=False)
    root = tmp_path / "models--google--ddpm-cifar10-32" / "snapshots"
    (next(root.iterdir()) / "scheduler_config.json").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError, match="scheduler config of google/ddpm-cifar10-32"):
        load_scheduler_config(published.CIFAR10_MODEL)


def test_a_pickled_checkpoint_from_the_hub_cache_loads_without_notices(tmp_path, monkeypatch):
    # google/ddpm-cifar10-32 has only a pickled .bin: diffusers logs an error before it falls back to reading it
    repo = tmp_path / "models--someone--ddpm"
    original = tiny_unet()
    original.save_pretrained(repo / "snapshots" / ("0" * 40), safe_serialization=False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    notices = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = notices.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' loggers do not propagate to pytest's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unet = load_unet("someone/ddpm")
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert [record.getMessage() for record in notices] == []
    loaded, expected = unet.state_dict(), original.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_a_conditional_edm_checkpoint_is_sampled_with_random_labels(tmp_path):
    unet_dir = tmp_path / "unet"
    UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(unet_dir)
    DDPMScheduler().save_config(unet_dir)
    edm_path = standins.write_edm_standin(tmp_path / "edm", seed=0)
    network = fid.load_edm_network(edm_path)
    assert network.label_dim == 10 and network.shape == (3, 32, 32)
    # labels as EDM's generate.py draws them: one-hot, uniform over the classes, reproducible from the seed
    labels = network.labels(2000, torch.Generator().manual_seed(1), "cpu")
    assert labels.shape == (2000, 10) and torch.equal(labels.sum(1), torch.ones(2000))
    assert labels.sum(0).min() > 150
    assert torch.equal(labels, network.labels(2000, torch.Generator().manual_seed(1), "cpu"))
    # the labels reach the network: two labels, two denoisers
    x = torch.randn(2, 3, 32, 32)
    first, second = (network.denoiser(torch.eye(10)[[k, k]])(x, 1.0) for k in (0, 1))
    assert (first - second).abs().max() > 1e-3
    # a run records how its EDM samples were conditioned
    rows = fid.run_fid(paper_config(tmp_path, unet_dir, methods=["heun"], edm_model=str(edm_path)))
    assert rows[0]["class_labels"].startswith("uniform random one-hot over 10 classes")
    assert rows[0]["weights"] == standins.STANDIN_LABEL


def test_models_are_identified_by_the_content_of_their_weights_in_any_format(tmp_path):
    folder = tmp_path / "ddpm"
    tiny_unet().save_pretrained(folder, safe_serialization=False)  # a pickled .bin, as google/ddpm-cifar10-32
    assert (folder / "diffusion_pytorch_model.bin").is_file()
    before = fid.model_identity(str(folder))
    weights = torch.load(folder / "diffusion_pytorch_model.bin", weights_only=True)
    next(iter(weights.values())).add_(1.0)
    torch.save(weights, folder / "diffusion_pytorch_model.bin")
    after = fid.model_identity(str(folder))
    assert after["sha256"] != before["sha256"] and after["name"] == before["name"] == "ddpm"
    assert before["weights"] == standins.TRAINED_LABEL
    # a stand-in under the same name is told apart by its weights and its label
    (folder / standins.MARKER).write_text("{}")
    marked = fid.model_identity(str(folder))
    assert marked["weights"] == standins.STANDIN_LABEL and marked != after
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights of"):
        fid.model_identity(str(tmp_path / "empty"))


def test_half_precision_reads_the_fp16_variant(tmp_path):
    only_fp16 = tmp_path / "unet"
    tiny_unet().to(torch.float16).save_pretrained(only_fp16, variant="fp16")
    assert not (only_fp16 / "diffusion_pytorch_model.safetensors").exists()
    unet = load_unet(only_fp16, dtype=torch.float16)
    assert unet.dtype == torch.float16
    with pytest.raises(Exception):  # float32 asks for the default files, which this folder lacks
        load_unet(only_fp16, dtype=torch.float32)
    # a folder without the variant still loads in float16 from its default files
    default = tmp_path / "default"
    tiny_unet().save_pretrained(default)
    assert load_unet(default, dtype=torch.float16).dtype == torch.float16


def test_clipping_follows_the_scheduler_config_on_request(tmp_path):
    folder = tmp_path / "unet"
    tiny_unet().save_pretrained(folder)
    DDPMScheduler(clip_sample=True).save_config(folder)  # as google/ddpm-cifar10-32
    rows = {}
    for follow in (False, True):
        cfg = paper_config(tmp_path, folder, methods=["ddim", "heun"], follow_clipping=follow)
        cfg.out_dir = tmp_path / f"out-{follow}"
        setup = fid.FIDSetup(cfg)
        assert setup.eps_model.prediction.limits_x0 == follow and not setup.unclipped.prediction.limits_x0
        assert not setup.model_for(bdia.MethodSpec("heun"))[0].prediction.limits_x0  # EDM's samplers never clip
        rows[follow] = {r["method"]: r for r in fid.run_fid(cfg)}
    assert rows[False]["ddim"]["x0_clipping"] == "none" and rows[True]["ddim"]["x0_clipping"] == "as the scheduler config"
    assert rows[True]["heun"]["x0_clipping"] == "none"
    assert rows[False]["ddim"]["fid"] != rows[True]["ddim"]["fid"]  # the random network's x0 leaves [-1, 1]
    # another convention is another fingerprint: the two never share an output folder
    assert fid.fingerprinted_dir(tmp_path, paper_config(tmp_path, folder)) != \
        fid.fingerprinted_dir(tmp_path, paper_config(tmp_path, folder, follow_clipping=True))
