"""FID runs: resumption, damaged or foreign shards, the statistics against an independent computation,
the detector and reference kinds of the paper profile, and the checks made before any sampling."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import bdia
from bdia.apps import fid, standins
from bdia.apps.files import code_digest
from bdia.__main__ import main

pytest.importorskip("diffusers")


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


def shard_files(folder):
    return sorted((folder / "samples").rglob("*.safetensors"))


def content(path):  # safetensors' header order is not fixed: compare tensors and metadata
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor("images"), f.metadata()


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
    shards = shard_files(tmp_path / "a")
    assert len(shards) == 3 and not list((tmp_path / "a").rglob("*.tmp*"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards}

    resumed = []
    rows = fid.run_fid(config(tmp_path / "a", tiny_digits_unet), on_shard=lambda s, c, k: resumed.append((str(s), k)))
    assert len(resumed) == 2 * 4 - 3 and not set(resumed) & set(written)  # only the missing shards
    assert all(p.stat().st_mtime_ns == before[p][0] and p.read_bytes() == before[p][1] for p in shards)

    uninterrupted = fid.run_fid(config(tmp_path / "b", tiny_digits_unet))
    assert [r["fid"] for r in rows] == [r["fid"] for r in uninterrupted]
    for p in shard_files(tmp_path / "b"):
        (images_b, meta_b), (images_a, meta_a) = content(p), content(tmp_path / "a" / p.relative_to(tmp_path / "b"))
        assert torch.equal(images_a, images_b) and meta_a == meta_b
    assert fid.read_results(tmp_path / "a") == rows
    assert (tmp_path / "a" / "results.csv").read_text().splitlines()[0].startswith("profile,method,label,budget")
    assert {r["calls"] for r in rows} == {4} and {r["steps"] for r in rows} == {4}


@pytest.fixture
def finished(tmp_path, tiny_digits_unet):
    """A finished run in tmp_path / 'run' with its scores."""
    cfg = config(tmp_path / "run", tiny_digits_unet)
    return cfg, {r["method"]: r["fid"] for r in fid.run_fid(cfg)}


def rerun(cfg, tiny_digits_unet):
    sampled = []
    with pytest.warns(UserWarning, match="sampling a bad shard again") as caught:
        rows = fid.run_fid(config(cfg.out_dir, tiny_digits_unet), on_shard=lambda s, c, k: sampled.append((str(s), k)))
    return {r["method"]: r["fid"] for r in rows}, sampled, " ".join(str(w.message) for w in caught)


def test_a_truncated_shard_is_named_and_sampled_again(finished, tiny_digits_unet):
    cfg, scores = finished
    bad = shard_files(cfg.out_dir)[1]
    bad.write_bytes(bad.read_bytes()[:50])
    again, sampled, message = rerun(cfg, tiny_digits_unet)
    assert str(bad) in message and "unreadable" in message
    assert len(sampled) == 1 and again == scores


def test_a_shard_with_altered_bytes_is_sampled_again(finished, tiny_digits_unet):
    cfg, scores = finished
    bad = shard_files(cfg.out_dir)[2]
    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF  # one image byte
    bad.write_bytes(bytes(data))
    again, sampled, message = rerun(cfg, tiny_digits_unet)
    assert "altered bytes" in message and len(sampled) == 1 and again == scores


def test_a_shard_copied_in_from_another_method_or_budget_is_never_scored(finished, tiny_digits_unet, tmp_path):
    cfg, scores = finished
    ddim = sorted((cfg.out_dir / "samples" / "ddim").rglob("*.safetensors"))
    bdia_shards = sorted((cfg.out_dir / "samples" / "bdia_gamma0.5").rglob("*.safetensors"))
    shutil.copy(ddim[0], bdia_shards[0])  # another method
    other = fid.run_fid(config(tmp_path / "budget8", tiny_digits_unet, budgets=[8], methods=["ddim"]))
    assert other
    shutil.copy(sorted((tmp_path / "budget8" / "samples").rglob("*.safetensors"))[1], ddim[1])  # another budget
    again, sampled, message = rerun(cfg, tiny_digits_unet)
    assert "method='ddim', expected 'bdia:gamma=0.5'" in message and "budget='8', expected '4'" in message
    assert len(sampled) == 2 and again == scores


def test_scoring_refuses_a_shard_damaged_after_sampling(finished, tiny_digits_unet):
    cfg, _ = finished
    shard = shard_files(cfg.out_dir)[0]
    profile = fid.FIDSetup(cfg)
    shard.write_bytes(b"not a shard")
    with pytest.raises(fid.ShardError, match="unreadable"):
        fid.score_shards(cfg, profile, {"mu": np.zeros(64), "sigma": np.eye(64)}, {"reference": "x"}, {}, code_digest())


def test_shards_are_flushed_to_disk_before_they_are_renamed(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    fid.write_shard(tmp_path / "s" / "shard.safetensors", torch.zeros(2, 1, 8, 8, dtype=torch.uint8), {"x": "1"})
    assert events[:2] == ["fsync", "replace"] and events.count("fsync") == 2  # the file, then its folder


def test_the_manifest_records_the_edm_checkpoint_by_content(tmp_path, tiny_digits_unet):
    import pickle

    first = tmp_path / "edm.pkl"
    with open(first, "wb") as f:
        pickle.dump({"ema": FakeEDM(1.0)}, f)
    cfg = config(tmp_path / "out", tiny_digits_unet, edm_model=str(first))
    record = fid.fingerprint(cfg, str(tiny_digits_unet))
    with open(first, "wb") as f:  # another checkpoint under the same name
        pickle.dump({"ema": FakeEDM(2.0)}, f)
    assert fid.fingerprint(cfg, str(tiny_digits_unet))["edm_model"]["sha256"] != record["edm_model"]["sha256"]
    assert record["edm_model"]["name"] == "edm.pkl"


def test_the_ci_features_are_the_shipped_classifier_whatever_the_thread_count(tiny_digits_unet, tmp_path):
    from bdia.apps import digits

    detector = fid.digit_detector()
    model, accuracy = digits.load_classifier()
    assert accuracy > 0.9 and detector.dim == 64
    images = fid.to_uint8(digits.load_digits_images()[0][:64])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = detector(images)
        torch.set_num_threads(2)
        two = detector(images)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)
    # the same samples scored by two runs: the same detector, the same digest in the manifest
    a = fid.run_fid(config(tmp_path / "a", tiny_digits_unet, methods=["ddim"]))
    b = fid.run_fid(config(tmp_path / "b", tiny_digits_unet, methods=["ddim"]))
    assert a[0]["fid"] == b[0]["fid"] and a[0]["detector_sha256"] == detector.sha256
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["detector"] == detector.sha256


def test_one_and_two_processes_give_the_same_fid(tmp_path, tiny_digits_unet):
    accelerate = shutil.which("accelerate") or str(os.path.join(os.path.dirname(os.sys.executable), "accelerate"))
    args = ["fid", "--methods", "ddim", "--calls", "4", "--num-samples", "20", "--batch-size", "5",
            "--model", str(tiny_digits_unet)]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    import subprocess

    done = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "2", "-m", "bdia", *args, "--out",
                           str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for path in shard_files(tmp_path / "one"):  # the same samples ...
        assert torch.equal(content(path)[0], content(tmp_path / "two" / path.relative_to(tmp_path / "one"))[0])
    one, two = fid.read_results(tmp_path / "one"), fid.read_results(tmp_path / "two")
    # ... and the same fixed features (float64, so thread counts do not move them): the same FID
    assert one[0]["fid"] == pytest.approx(two[0]["fid"], rel=1e-12)


def test_resuming_with_another_model_or_seed_is_refused(tmp_path, tiny_digits_unet):
    fid.run_fid(config(tmp_path, tiny_digits_unet, methods=["ddim"], num_samples=15))  # a last, smaller shard
    with pytest.raises(fid.ManifestMismatchError, match="different seed"):
        fid.run_fid(config(tmp_path, tiny_digits_unet, methods=["ddim"], num_samples=15, seed=1))
    # the same folder name with other weights: the manifest holds the weights' hash, not only the name
    from diffusers import UNet2DModel

    other = tmp_path.parent / "other-models" / tiny_digits_unet.name
    unet = UNet2DModel.from_pretrained(tiny_digits_unet)
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)
    unet.save_pretrained(other)
    with pytest.raises(fid.ManifestMismatchError, match="different model"):
        fid.run_fid(config(tmp_path, other, methods=["ddim"], num_samples=15))


def test_feature_statistics_and_frechet_distance_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3)) @ np.array([[1.0, 0.2, 0.0], [0.0, 0.7, 0.1], [0.0, 0.0, 1.3]])
    stats = fid.FeatureStats(3)
    for chunk in np.array_split(a, 7):
        stats.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(stats.mu, a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(a, rowvar=False), rtol=1e-10)
    assert fid.frechet_distance(stats.mu, stats.sigma, stats.mu, stats.sigma) == pytest.approx(0.0, abs=1e-9)
    # a shift by s in every coordinate adds 3 s^2; the same covariance contributes nothing
    shifts = [stats.fid({"mu": stats.mu + s, "sigma": stats.sigma}) for s in (0.1, 0.5, 1.0)]
    assert shifts == pytest.approx([3 * s**2 for s in (0.1, 0.5, 1.0)], rel=1e-6)
    # two Gaussians with diagonal covariances: sum (s1 - s2)^2 over the standard deviations
    diag = fid.frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.zeros(2), np.diag([9.0, 1.0]))
    assert diag == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2, rel=1e-9)
    with pytest.raises(ValueError, match=r"expected \(n, 3\)"):
        stats.update(torch.zeros(2, 4))
    # the trace of the square root, against SciPy's sqrtm of C1 C2 (EDM's computation) on full-rank covariances
    from scipy import linalg

    b = rng.normal(size=(500, 40)) @ rng.normal(size=(40, 40)) * 0.3
    c = rng.normal(size=(600, 40)) + 0.2
    c1, c2 = np.cov(b, rowvar=False), np.cov(c, rowvar=False)
    scipy_value = np.square(b.mean(0) - c.mean(0)).sum() + np.trace(c1 + c2 - 2 * np.real(linalg.sqrtm(c1 @ c2)))
    assert fid.frechet_distance(b.mean(0), c1, c.mean(0), c2) == pytest.approx(scipy_value, rel=1e-9)


def test_budgets_to_steps():
    assert [bdia.get_method(m).steps_for_budget(10) for m in ("ddim", "bdia", "obelm", "edict", "heun", "bdia-edm")] == \
        [10, 10, 10, 5, 5, 5]
    with pytest.raises(ValueError, match="too small for 'bdia'"):
        bdia.get_method("bdia").steps_for_budget(1)
    with pytest.raises(ValueError, match="unknown profile 'cifar'"):
        fid.FIDConfig(out_dir="x", profile="cifar")


@pytest.fixture
def detector_file(tmp_path):
    path = standins.write_detector(tmp_path / "torch" / "hub" / "checkpoints", seed=0)
    return path


def test_the_stand_in_detector_loads_with_torch_alone_and_is_labelled(detector_file, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    detector = fid.load_detector()  # from the torch hub cache, as the paper profile finds it
    assert detector.weights == standins.STANDIN_LABEL and detector.dim == 2048
    features = detector(torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8))  # grey: repeated to RGB
    assert features.shape == (5, 2048) and features.dtype == torch.float64
    assert fid.load_detector(detector_file).sha256 == detector.sha256


def test_detector_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt.*python -m bdia standins"):
        fid.load_detector(offline=True)
    with pytest.raises(FileNotFoundError, match="no FID detector at"):
        fid.load_detector(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.warns(UserWarning, match="runs code from the file"), pytest.raises(ValueError, match="neither"):
        fid.load_detector(junk)
    small = torch.jit.script(torch.nn.Linear(3, 4))
    torch.jit.save(small, str(tmp_path / "small.pt"))
    with pytest.raises((ValueError, RuntimeError)):
        fid.load_detector(tmp_path / "small.pt")


def test_references_as_statistics_file_and_image_folder(tmp_path, detector_file):
    detector = fid.load_detector(detector_file)
    standins.write_reference(tmp_path / "ref", seed=0, count=12)
    stats, description = fid.reference_stats(tmp_path / "ref", detector, cache_dir=tmp_path / "cache")
    assert description["kind"] == "image folder" and description["weights"] == standins.STANDIN_LABEL
    assert stats["mu"].shape == (2048,) and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    # the cached statistics equal a direct computation over the same images
    from PIL import Image

    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                          for p in sorted((tmp_path / "ref").glob("*.png"))])
    direct = fid.image_stats(detector, [images])
    np.testing.assert_allclose(stats["mu"], direct.mu, rtol=1e-12)
    direct.save(tmp_path / "edm-style.npz")  # EDM's format: mu and sigma
    again, description = fid.reference_stats(tmp_path / "edm-style.npz", detector)
    assert description["kind"] == "statistics file" and np.allclose(again["sigma"], direct.sigma)
    np.savez(tmp_path / "wrong.npz", mu=np.zeros(64), sigma=np.eye(64))
    with pytest.raises(ValueError, match="64-d statistics, the detector gives 2048-d"):
        fid.reference_stats(tmp_path / "wrong.npz", detector)
    with pytest.raises(FileNotFoundError, match="cifar10-32x32.npz"):
        fid.reference_stats(tmp_path / "missing.npz", detector)


def test_paper_profile_checks_everything_before_sampling(tmp_path, monkeypatch):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    from diffusers import DDPMScheduler

    DDPMScheduler().save_config(tmp_path / "unet")  # the schedule the paper profile reads with the model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    sampled = []
    cfg = fid.FIDConfig(out_dir=tmp_path / "out", profile="paper", model=str(tmp_path / "unet"), budgets=[4],
                        num_samples=4, batch_size=4, progress=False)
    with pytest.raises(FileNotFoundError, match="FID detector is not on this machine"):
        fid.run_fid(cfg, on_shard=lambda *a: sampled.append(a))
    standins.write_detector(tmp_path / "no-torch-home" / "hub" / "checkpoints", seed=0)
    monkeypatch.setenv("BDIA_CACHE", str(tmp_path / "cache"))
    with pytest.raises((OSError, ModuleNotFoundError), match="uoft-cs/cifar10"):
        fid.run_fid(cfg, on_shard=lambda *a: sampled.append(a))
    assert sampled == []  # nothing was sampled before the missing pieces were found
    standins.write_reference(tmp_path / "ref", seed=1, count=8)
    rows = fid.run_fid(fid.FIDConfig(**{**fid.config_record(cfg), "out_dir": tmp_path / "out2",
                                        "methods": ["ddim"], "reference": str(tmp_path / "ref")}))
    assert np.isfinite(rows[0]["fid"]) and rows[0]["detector_weights"] == standins.STANDIN_LABEL
    # a resumed run with another detector is refused
    standins.write_detector(tmp_path / "no-torch-home" / "hub" / "checkpoints", seed=5)
    with pytest.raises(fid.ManifestMismatchError, match="detector"):
        fid.run_fid(fid.FIDConfig(**{**fid.config_record(cfg), "out_dir": tmp_path / "out2",
                                     "methods": ["ddim"], "reference": str(tmp_path / "ref")}))


def test_unwritable_output_is_refused_before_sampling(tmp_path, tiny_digits_unet):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write to the output folder"):
        fid.run_fid(config(blocker / "out", tiny_digits_unet))


class FakeEDM(torch.nn.Module):
    """Stands in for an NVlabs EDM network: forward(x, sigma) -> D(x), with img_channels and img_resolution."""

    img_channels, img_resolution = 3, 8

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x, sigma, class_labels=None):
        return x / (self.scale + sigma.view(-1, 1, 1, 1) ** 2)


def test_paper_profile_runs_edm_methods_on_an_edm_checkpoint(tmp_path, detector_file, monkeypatch):
    import pickle

    from diffusers import UNet2DModel

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    from diffusers import DDPMScheduler

    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    DDPMScheduler().save_config(tmp_path / "unet")  # the paper profile reads the model's schedule from it
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": FakeEDM()}, f)
    profile = fid.FIDSetup(fid.FIDConfig(out_dir=tmp_path / "out", profile="paper", model=str(tmp_path / "unet"),
                                         edm_model=str(tmp_path / "edm.pkl")))
    eps_model, schedule = profile.model_for(bdia.MethodSpec("heun"))
    assert isinstance(schedule, bdia.EDMSchedule) and schedule.timesteps(5)[0] == 80.0
    x = torch.randn(2, 3, 8, 8)
    # eps = (x - D(x)) / sigma for a denoiser D(x) = x / (1 + sigma^2)
    torch.testing.assert_close(eps_model(x, 2.0), (x - x / 5) / 2)
    assert profile.model_for(bdia.MethodSpec("ddim"))[0] is profile.eps_model
    with pytest.raises(OSError, match="no EDM checkpoint"):
        fid.load_edm_network(tmp_path / "missing.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="is not an EDM checkpoint"):
        fid.load_edm_network(tmp_path / "junk.pkl")


def test_command_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fid", "--profile", "paper", "--out", str(tmp_path), "--num-samples", "10"]) == 2
    err = capsys.readouterr().err
    assert "google/ddpm-cifar10-32" in err and "python -m bdia standins" in err and "Traceback" not in err
    assert main(["fid", "--methods", "bdia:gamma=2", "--out", str(tmp_path)]) == 2
    assert "gamma must be in [0, 1]" in capsys.readouterr().err
