"""What a newcomer's run broke: overflow in the bounds, warnings that covered BDIA only, inverted latents far
from noise, bad inputs that ended in torch's errors, and a command line that printed tracebacks."""

import math
import subprocess
import sys
import warnings

import pytest
import torch

import bdia
from bdia.__main__ import main
from conftest import make_mixture


# -- numerics and warnings ------------------------------------------------------------------------------
def test_amplification_bounds_do_not_overflow(sd_schedule):
    assert bdia.rounding_amplification("bdia", 500, gamma=0.2) == math.inf  # (1/0.2)^499 is beyond float range
    assert bdia.rounding_amplification("bdia", 50, gamma=0.96) == pytest.approx(0.96**-49, rel=1e-12)
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4)
    # the run is warned about first, and stops with an error that names where the states overflowed
    with pytest.warns(bdia.ExactnessWarning, match="= inf"), \
            pytest.raises(bdia.NonFiniteError, match="first appeared at step .* of 500 of 'bdia' inversion"):
        bdia.invert(model, x0, sd_schedule, 500, "bdia", gamma=0.2)
    state = bdia.invert(model, x0, sd_schedule, 10, "bdia")
    assert state.noise_stats["amplification_bound"] == 1.0


def test_the_bound_covers_every_method_from_its_own_coefficients():
    edm = bdia.EDMSchedule()
    # O-BELM's inverse divides by (h_i / h_{i+1})^2 on every step: on a coarse Karras grid the product is huge
    obelm = bdia.rounding_amplification("obelm", 5, schedule=edm, num_steps=5)
    assert obelm > 1e5
    assert bdia.rounding_amplification("obelm", 50, schedule=bdia.VPSchedule.scaled_linear(), num_steps=50) < 10
    assert bdia.rounding_amplification("edict", 50, p=0.93) == pytest.approx(0.93 ** (-2 * 50), rel=1e-12)
    assert bdia.rounding_amplification("ddim", 50) == 1.0
    with pytest.raises(TypeError, match="pass schedule= and num_steps="):
        bdia.rounding_amplification("obelm", 5)


def test_the_inverted_states_are_measured_against_their_noise_level(sd_schedule):
    mixture = make_mixture(4, seed=1)
    model = mixture.eps_model(sd_schedule)
    x0 = mixture.sample(64, generator=torch.Generator().manual_seed(0))
    one = bdia.invert(model, x0, sd_schedule, 50, "bdia", gamma=1.0).noise_stats
    assert 0.7 < one["ratio"] < 1.5 and one["peak_ratio"] < 2  # gamma = 1: noise-like at every level
    low = bdia.invert(model, x0, sd_schedule, 50, "bdia", gamma=0.9).noise_stats
    assert low["ratio"] > 1.5 * one["ratio"]  # the parasitic mode: farther from noise, still exact
    # the measured growth warns for every method: EDICT with p = 0.5 over 50 steps grows its states ~1e24-fold,
    # and its round trip is lost, with no a-priori warning (only BDIA's bound is reached so reliably)
    with pytest.warns(bdia.ExactnessWarning, match="grew to .* times the noise level"):
        state = bdia.invert(model, x0, sd_schedule, 50, "edict", p=0.5)
    assert state.noise_stats["peak_ratio"] > 1e20
    assert (bdia.sample(model, state, sd_schedule, 50, "edict") - x0).norm() > x0.norm()
    with warnings.catch_warnings():  # p = 0.93 (the default) grows them ~14-fold: no warning
        warnings.simplefilter("error")
        bdia.invert(model, x0, sd_schedule, 50, "edict")


# -- library input checks ------------------------------------------------------------------------------
def test_models_of_another_dtype_or_returning_other_dtypes(sd_schedule):
    net = torch.nn.Linear(2, 2)  # float32 parameters

    def float32_module(z, t):
        return net(z)

    x0 = make_mixture(2).sample(4)  # float64
    with pytest.raises(TypeError, match="parameters have another dtype. Cast at the model's boundary"):
        bdia.sample(float32_module, x0, sd_schedule, 4, "ddim")
    exact = make_mixture(2).eps_model(sd_schedule)
    with pytest.warns(bdia.ExactnessWarning, match="returned torch.float16 eps for torch.float64 states"):
        bdia.sample(lambda z, t: exact(z, t).half(), x0, sd_schedule, 4, "ddim")
    with pytest.raises(TypeError, match="returned torch.int64 values"):
        bdia.sample(lambda z, t: torch.zeros_like(z, dtype=torch.long), x0, sd_schedule, 4, "ddim")


def test_empty_batches_and_option_types(sd_schedule):
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4)
    with pytest.raises(ValueError, match="is empty"):
        bdia.invert(model, x0[:0], sd_schedule, 4, "bdia")
    with pytest.raises(TypeError, match="leapfrog must be True or False, got 'no'"):
        bdia.invert(model, x0, sd_schedule, 4, "edict", leapfrog="no")
    with pytest.raises(TypeError, match="strength must be a number in \\(0, 1\\], got 'x'"):
        bdia.invert(model, x0, sd_schedule, 4, "bdia", strength="x")
    with pytest.raises(TypeError, match="mixing weight p must be a number"):
        bdia.invert(model, x0, sd_schedule, 4, "edict", p="0.9")


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["fid", "--device", "banana"], "unknown device 'banana'"),
    (["bench", "--dtypes", "float17"], "invalid choice: 'float17'"),
    (["demo", "--steps", "0"], "--steps must be at least 2"),
    (["demo", "--steps", "1"], "--steps must be at least 2"),
    (["demo", "--batch", "0"], "--batch must be at least 1"),
    (["demo", "--dim", "0"], "--dim must be at least 1"),
    (["fid", "--methods", "bdia:gamma=abc"], "method spec 'bdia:gamma=abc' is malformed"),
    (["fid", "--num-sample", "5"], "unrecognized arguments: --num-sample"),
    (["bench", "--methods", "heun", "--out", "/dev/null/x.json"], "has no inverse"),
    (["bench", "--steps", "1"], "--steps must be at least 2"),
])
def test_user_errors_end_with_a_message_not_a_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["fid", "--device", "cuda"]) == 2
    assert "this machine has no CUDA GPU" in capsys.readouterr().err


def test_unwritable_bench_output_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["bench", "--models", "gmm2d", "--steps", "4", "--out", str(blocker / "x" / "r.json")]) == 2
    assert "cannot write the results" in capsys.readouterr().err


def test_an_edm_model_that_is_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04garbage")
    assert main(["fid", "--profile", "paper", "--edm-model", str(junk), "--model", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_train_commands_do_not_overwrite_the_shipped_weights(capsys):
    from bdia.apps.digits import shipped_classifier_path, shipped_model_path

    assert main(["train-digits", "--out", str(shipped_model_path()), "--steps", "1"]) == 2
    assert "--overwrite-shipped" in capsys.readouterr().err
    assert main(["train-classifier", "--out", str(shipped_classifier_path()), "--epochs", "1"]) == 2
    assert "--overwrite-shipped" in capsys.readouterr().err
    from bdia.__main__ import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["train-digits"].format_help()
    assert "(default:outputs/digits-unet)" in "".join(help_text.split())


def test_ctrl_c_during_fid_exits_130_and_says_how_to_resume(tmp_path):
    code = ("import signal, threading, sys\n"
            "from bdia.__main__ import main\n"
            "import bdia.apps.fid.run as fid\n"
            "real = fid.sample\n"
            "def interrupted(*a, **k):\n"
            "    raise KeyboardInterrupt\n"
            "fid.sample = interrupted\n"
            f"sys.exit(main(['fid', '--methods', 'ddim', '--calls', '4', '--num-samples', '4', '--batch-size', '2', "
            f"'--out', r'{tmp_path}']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130 and "rerun the same command to resume" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_local_path_is_not_tried_on_the_hub(tmp_path, monkeypatch):
    from bdia.diffusers import ModelNotAvailableError, load_unet

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online: a path must still not be sent to the hub
    with pytest.raises(ModelNotAvailableError, match="no model folder at") as caught:
        load_unet(tmp_path / "missing-model")
    assert "paper" not in str(caught.value)
