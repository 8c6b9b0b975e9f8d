"""FID runs: resumption without recomputation, Fréchet distance sanity, the command line's errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")
import bdia  # noqa: E402
from bdia import fid  # noqa: E402
from bdia.__main__ import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny_digits_unet(tmp_path_factory):
    """A randomly initialised class-conditional UNet2DModel with the digits model's input shape."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=11)
    path = tmp_path_factory.mktemp("models") / "tiny-digits"
    unet.save_pretrained(path)
    return path


def config(out, model, **kw):
    base = dict(out_dir=out, profile="ci", methods=["ddim", "bdia:gamma=0.5"], budgets=[4], num_samples=40,
                batch_size=10, model=str(model), progress=False)
    return fid.FIDConfig(**{**base, **kw})


def test_interrupted_run_resumes_without_recomputing(tmp_path, tiny_digits_unet):
    class Stop(Exception):
        pass

    written = []

    def stop_after_three(spec, calls, k):
        written.append((str(spec), k))
        if len(written) == 3:
            raise Stop

    with pytest.raises(Stop):
        fid.run_fid(config(tmp_path / "a", tiny_digits_unet), on_shard=stop_after_three)
    shards = sorted((tmp_path / "a" / "samples").rglob("*.safetensors"))
    assert len(shards) == 3 and not list((tmp_path / "a").rglob("*.tmp*"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}

    def content(path):  # safetensors' header order is not fixed: compare tensors and metadata
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return f.get_tensor("images"), f.metadata()

    resumed = []
    rows = fid.run_fid(config(tmp_path / "a", tiny_digits_unet), on_shard=lambda s, c, k: resumed.append((str(s), k)))
    assert len(resumed) == 2 * 4 - 3 and not set(resumed) & set(written)  # only the missing shards
    assert all(p.stat().st_mtime_ns == before[p][0] and p.read_bytes() == before[p][1] for p in shards)

    uninterrupted = fid.run_fid(config(tmp_path / "b", tiny_digits_unet))
    assert [r["fid"] for r in rows] == [r["fid"] for r in uninterrupted]
    for p in sorted((tmp_path / "b" / "samples").rglob("*.safetensors")):
        (images_b, meta_b), (images_a, meta_a) = content(p), content(tmp_path / "a" / p.relative_to(tmp_path / "b"))
        assert torch.equal(images_a, images_b) and meta_a == meta_b
    assert fid.read_results(tmp_path / "a") == rows
    assert (tmp_path / "a" / "results.csv").read_text().splitlines()[0].startswith("profile,method,label,budget")
    assert {r["calls"] for r in rows} == {4} and {r["steps"] for r in rows} == {4}


def test_resuming_with_another_model_or_seed_is_refused(tmp_path, tiny_digits_unet):
    fid.run_fid(config(tmp_path, tiny_digits_unet, methods=["ddim"], num_samples=15))  # a last, smaller shard
    with pytest.raises(fid.ManifestMismatchError, match="different seed"):
        fid.run_fid(config(tmp_path, tiny_digits_unet, methods=["ddim"], num_samples=15, seed=1))


def test_frechet_distance_sanity_and_torchmetrics_agreement():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x.double()

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3)) @ np.array([[1.0, 0.2, 0.0], [0.0, 0.7, 0.1], [0.0, 0.0, 1.3]])
    b = rng.normal(size=(4000, 3)) * 0.8 + 0.3

    def stats(x):
        return x.mean(0), np.cov(x, rowvar=False)

    assert fid.frechet_distance(*stats(a), *stats(a)) == pytest.approx(0.0, abs=1e-9)
    shifts = [fid.frechet_distance(*stats(a), *stats(a + s)) for s in (0.1, 0.5, 1.0)]
    assert shifts == pytest.approx([3 * s**2 for s in (0.1, 0.5, 1.0)], rel=1e-6) and shifts == sorted(shifts)
    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert float(metric.compute()) == pytest.approx(fid.frechet_distance(*stats(a), *stats(b)), rel=1e-5)


def test_budgets_to_steps():
    assert [fid.steps_for_budget(m, 10) for m in ("ddim", "bdia", "obelm", "edict", "heun", "bdia-edm")] == \
        [10, 10, 10, 5, 5, 5]
    with pytest.raises(ValueError, match="too small for 'bdia'"):
        fid.steps_for_budget("bdia", 1)
    with pytest.raises(ValueError, match="unknown profile 'cifar'"):
        fid.FIDConfig(out_dir="x", profile="cifar")


def test_paper_profile_loads_a_local_model_of_the_same_class(tmp_path):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    profile = fid._Profile(fid.FIDConfig(out_dir=tmp_path / "out", profile="paper", model=str(tmp_path / "unet")))
    assert profile.shape == (3, 8, 8)
    assert profile.eps_model(torch.randn(2, 3, 8, 8), 500.0).shape == (2, 3, 8, 8)


class FakeEDM(torch.nn.Module):
    """Stands in for an NVlabs EDM network: forward(x, sigma) -> D(x), with img_channels and img_resolution."""

    img_channels, img_resolution = 3, 8

    def forward(self, x, sigma, class_labels=None):
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)


def test_paper_profile_runs_edm_methods_on_an_edm_checkpoint(tmp_path):
    import pickle

    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": FakeEDM()}, f)
    profile = fid._Profile(fid.FIDConfig(out_dir=tmp_path / "out", profile="paper", model=str(tmp_path / "unet"),
                                         edm_model=str(tmp_path / "edm.pkl")))
    eps_model, schedule = profile.model_for(fid.MethodSpec("heun"))
    assert isinstance(schedule, bdia.EDMSchedule) and schedule.timesteps(5)[0] == 80.0
    x = torch.randn(2, 3, 8, 8)
    # eps = (x - D(x)) / sigma for a denoiser D(x) = x / (1 + sigma^2)
    torch.testing.assert_close(eps_model(x, 2.0), (x - x / 5) / 2)
    assert profile.model_for(fid.MethodSpec("ddim"))[0] is profile.eps_model
    with pytest.raises(OSError, match="no EDM checkpoint"):
        fid.load_edm_denoiser(tmp_path / "missing.pkl")


def test_command_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fid", "--profile", "paper", "--out", str(tmp_path), "--num-samples", "10"]) == 2
    assert "google/ddpm-cifar10-32" in capsys.readouterr().err
    assert main(["fid", "--methods", "bdia:gamma=2", "--out", str(tmp_path)]) == 2
    assert "gamma must be in [0, 1]" in capsys.readouterr().err
