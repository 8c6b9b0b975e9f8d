"""Exactness of inversion: invert, reconstruct, compare, on exact Gaussian-mixture models."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import bdia
from conftest import SCHEDULES, make_mixture, rel_err

EXACT = [("bdia", {"gamma": 1.0}), ("bdia", {"gamma": 0.95}), ("edict", {}), ("obelm", {}),
         ("bdia-edm", {"gamma": 1.0}), ("bdia-edm", {"gamma": 0.95})]
DIMS = [2, 16, 64]
STEPS = [2, 3, 10, 50, 100]


def round_trip(model, x0, schedule, num_steps, method, **opts):
    state = bdia.invert(model, x0, schedule, num_steps, method, **opts)
    return bdia.sample(model, state, schedule, num_steps, method), state


def tolerance_float64(schedule_name, method):
    # BDIA-EDM works in EDM space x = z / alpha; DDPM's alpha at t = 999 is 0.0064, so its states are ~157x
    # larger than the data there and rounding errors grow with them
    return 1e-10 if (schedule_name, method) == ("ddpm", "bdia-edm") else 1e-11


@pytest.mark.parametrize("schedule_name", ["sd", "ddpm", "edm"])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("method, opts", EXACT, ids=lambda v: str(v))
def test_exact_round_trip_float64(schedule_name, dim, method, opts):
    schedule = SCHEDULES[schedule_name]()
    mixture = make_mixture(dim, seed=dim)
    model = mixture.eps_model(schedule)
    x0 = mixture.sample(32, generator=torch.Generator().manual_seed(1))
    for num_steps in STEPS:
        rec, state = round_trip(model, x0, schedule, num_steps, method, **opts)
        assert rec.dtype == torch.float64 and rec.shape == x0.shape
        assert rel_err(rec, x0) <= tolerance_float64(schedule_name, method), (num_steps, rel_err(rec, x0))


@pytest.mark.parametrize("schedule_name", ["sd", "ddpm"])
@pytest.mark.parametrize("dim", DIMS)
def test_bdia_round_trip_float32(schedule_name, dim):
    schedule = SCHEDULES[schedule_name]()
    mixture = make_mixture(dim, seed=dim)
    model = mixture.eps_model(schedule)
    x0 = mixture.sample(32, generator=torch.Generator().manual_seed(2), dtype=torch.float32)
    for num_steps in STEPS:
        rec, _ = round_trip(model, x0, schedule, num_steps, "bdia", gamma=1.0)
        assert rec.dtype == torch.float32
        assert rel_err(rec, x0) <= 1e-5, (num_steps, rel_err(rec, x0))


@pytest.mark.parametrize("schedule_name", ["sd", "ddpm", "edm"])
@pytest.mark.parametrize("dim", DIMS)
def test_ddim_inversion_drifts(schedule_name, dim):
    """The same check on classic DDIM inversion fails by orders of magnitude: the tests discriminate."""
    schedule = SCHEDULES[schedule_name]()
    mixture = make_mixture(dim, seed=dim)
    model = mixture.eps_model(schedule)
    x0 = mixture.sample(32, generator=torch.Generator().manual_seed(1))
    for num_steps in STEPS:
        rec, _ = round_trip(model, x0, schedule, num_steps, "ddim")
        assert rel_err(rec, x0) > 1e-4, num_steps


@given(
    dim=st.sampled_from(DIMS),
    num_steps=st.sampled_from(STEPS),
    method=st.sampled_from(["bdia", "edict", "obelm", "bdia-edm"]),
    gamma=st.floats(0.95, 1.0),
    schedule_name=st.sampled_from(["sd", "edm"]),
    seed=st.integers(0, 2**31 - 1),
    components=st.integers(1, 8),
    std=st.floats(0.05, 1.0),
)
def test_exact_round_trip_property(dim, num_steps, method, gamma, schedule_name, seed, components, std):
    schedule = SCHEDULES[schedule_name]()
    mixture = make_mixture(dim, seed=seed, components=components, std=std)
    model = mixture.eps_model(schedule)
    x0 = mixture.sample(16, generator=torch.Generator().manual_seed(seed))
    opts = {"gamma": gamma} if method.startswith("bdia") else {}
    rec, _ = round_trip(model, x0, schedule, num_steps, method, **opts)
    assert rel_err(rec, x0) <= 1e-11


@pytest.mark.parametrize("method", ["bdia", "edict", "obelm", "bdia-edm"])
def test_partial_inversion_round_trip(sd_schedule, method):
    """Editing inverts only part of the grid (``strength``); reconstruction resumes from there."""
    mixture = make_mixture(4)
    model = mixture.eps_model(sd_schedule)
    x0 = mixture.sample(8, generator=torch.Generator().manual_seed(3))
    state = bdia.invert(model, x0, sd_schedule, 50, method, strength=0.8)
    assert state.num_inverted_steps == 40 and float(state.timesteps[-1]) == -1.0
    assert rel_err(bdia.sample(model, state, sd_schedule, 50, method), x0) < 1e-11


def test_round_trip_on_the_gpu_when_there_is_one():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(16)
    model = mixture.eps_model(schedule)
    x0 = mixture.sample(32).cuda()
    rec, state = round_trip(model, x0, schedule, 50, "bdia")
    assert rec.device.type == "cuda" and state.device.type == "cuda"
    assert rel_err(rec.cpu(), x0.cpu()) < 1e-11


def test_half_precision_inversion_warns(sd_schedule):
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4, dtype=torch.float16)
    with pytest.warns(bdia.ExactnessWarning, match="float16 is not exact"):
        bdia.invert(model, x0, sd_schedule, 5, "bdia")


def test_low_gamma_warns_with_the_amplification_factor(sd_schedule):
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4)
    with pytest.warns(bdia.ExactnessWarning, match=r"\(1/gamma\)\^\(N-1\) = 5.63e\+14"):
        bdia.invert(model, x0, sd_schedule, 50, "bdia", gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bdia.invert(model, x0, sd_schedule, 50, "bdia", gamma=0.96)  # 7.4x: no warning
