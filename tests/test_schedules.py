import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import bdia
from bdia.schedules import karras_sigmas


def test_stable_diffusion_and_ddpm_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    sd = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ddpm = diffusers.DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    for ours, theirs in [(bdia.VPSchedule.scaled_linear(), sd), (bdia.VPSchedule.ddpm(), ddpm)]:
        t = torch.arange(1000, dtype=torch.float64)
        np.testing.assert_allclose(ours.alpha(t) ** 2, theirs.alphas_cumprod.double(), rtol=1e-6)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [10, 50])
def test_grids_match_diffusers_timesteps(spacing, num_steps):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
                                    set_alpha_to_one=False)
    sched.set_timesteps(num_steps)
    ours = bdia.VPSchedule.from_diffusers_config(sched.config)
    grid = ours.timesteps(num_steps)
    assert grid[:-1].tolist() == sched.timesteps.double().tolist()
    assert grid[-1] == -1 and ours.level(-1).alpha ** 2 == pytest.approx(float(sched.final_alpha_cumprod))


@pytest.mark.parametrize("schedule", [bdia.VPSchedule.scaled_linear(), bdia.VPSchedule.ddpm()])
def test_variance_preserving_and_data_end(schedule):
    t = torch.linspace(-1, 999, 4001, dtype=torch.float64)
    a, s = schedule.alpha(t), schedule.sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(t), rtol=0, atol=1e-14)
    assert torch.all(torch.diff(s) > 0)
    assert schedule.level(-1) == (1.0, 0.0)
    assert schedule.init_noise_sigma(10) == pytest.approx(1.0)


def test_trailing_grid_is_uniform_to_the_data_end():
    grid = bdia.VPSchedule.ddpm().timesteps(50)
    assert grid.tolist() == [999.0 - 20 * k for k in range(50)] + [-1.0]


@given(t=st.floats(-1, 999))
def test_edm_sigma_inverse(t):
    sched = bdia.VPSchedule.scaled_linear()
    assert sched.timestep_for_edm_sigma(sched.edm_sigma(t)) == pytest.approx(t, abs=1e-7)


def test_edm_schedule_and_karras_grid():
    sched = bdia.EDMSchedule()
    grid = sched.timesteps(18)
    assert len(grid) == 19 and grid[0] == 80.0 and grid[-2] == pytest.approx(0.002) and grid[-1] == 0.0
    assert torch.all(torch.diff(grid) < 0)
    assert sched.level(3.0) == (1.0, 3.0)
    assert sched.init_noise_sigma(18) == pytest.approx(math.hypot(1, 80))
    assert karras_sigmas(1).tolist() == [80.0]


def test_karras_spacing_on_a_vp_schedule_stays_in_range():
    sched = bdia.VPSchedule.ddpm(spacing="karras")
    grid = sched.timesteps(12)
    assert grid[0] <= 999 and grid[-2] == pytest.approx(0.0) and grid[-1] == -1
    assert sched.edm_sigma(float(grid[0])) == pytest.approx(80.0)
    assert torch.all(torch.diff(grid) < 0)


@pytest.mark.parametrize("bad, message", [
    (dict(spacing="cosine"), "unknown spacing 'cosine'; allowed"),
    (dict(final_alpha_cumprod=1.5), "final_alpha_cumprod must be in"),
])
def test_bad_schedule_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        bdia.VPSchedule.scaled_linear(**bad)


def test_bad_grid_and_time_requests():
    sched = bdia.VPSchedule.scaled_linear()
    with pytest.raises(ValueError, match="num_steps must be at least 1"):
        sched.timesteps(0)
    with pytest.raises(TypeError, match="num_steps must be an integer"):
        sched.timesteps(2.5)
    with pytest.raises(ValueError, match="exceeds the schedule's 1000 training timesteps"):
        sched.timesteps(1001)
    with pytest.raises(ValueError, match=r"outside this schedule's range \[-1, 999\]"):
        sched.alpha(1000.0)
    with pytest.raises(ValueError, match="outside this schedule's range"):
        sched.timestep_for_edm_sigma(1e6)
    with pytest.raises(ValueError, match="beta_schedule 'cosine' is not supported"):
        bdia.VPSchedule.from_diffusers_config({"beta_schedule": "cosine"})
    # the cosine schedule (squaredcos_cap_v2) is supported: its first and last betas, from the formula's definition
    cos = bdia.VPSchedule.from_diffusers_config({"beta_schedule": "squaredcos_cap_v2"})
    import math

    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert float(cos.alphas_cumprod[0]) == pytest.approx(f(1 / 1000) / f(0), rel=1e-12)


def test_zero_terminal_snr_lives_in_the_core_schedule():
    """rescale_betas_zero_snr (Lin et al. 2024): alpha = 0 at the last timestep, as diffusers' DDIM has it; an eps
    model cannot start there (x0 is undetermined), a v-prediction model can."""
    diffusers = pytest.importorskip("diffusers")
    config = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
                  timestep_spacing="trailing")
    ours = bdia.VPSchedule.from_diffusers_config(config)
    theirs = diffusers.DDIMScheduler(**config)
    # diffusers rescales in float32: near the end its values carry float32's cancellation error (~1e-11)
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), theirs.alphas_cumprod.double().numpy(), rtol=1e-5,
                               atol=1e-10)
    assert ours.level(999) == (0.0, 1.0) and ours.level(998).alpha > 0 and ours.edm_sigma(999) == math.inf
    z = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="an eps prediction at alpha = 0"):
        bdia.sample(lambda z, t: torch.zeros_like(z), z, ours, 10, "ddim")
    v_model = bdia.with_prediction(lambda z, t: -z, "v_prediction")  # v = -z: x0 = alpha z + sigma z
    assert torch.isfinite(bdia.sample(v_model, z, ours, 10, "bdia")).all()


def test_with_spacing_keeps_levels():
    sched = bdia.VPSchedule.scaled_linear()
    other = sched.with_spacing("leading", steps_offset=1)
    assert other.level(500) == sched.level(500)
    assert other.timesteps(50)[0] == 981


def test_stable_diffusion_is_what_its_scheduler_config_gives():
    diffusers = pytest.importorskip("diffusers")
    ddim = diffusers.DDIMScheduler(**bdia.schedules.STABLE_DIFFUSION_CONFIG)
    ours = bdia.VPSchedule.stable_diffusion()
    for n in (10, 50):
        ddim.set_timesteps(n)
        assert ours.timesteps(n)[:-1].tolist() == ddim.timesteps.double().tolist()
    assert ours.level(-1).alpha ** 2 == pytest.approx(float(ddim.final_alpha_cumprod), rel=1e-6)
    assert ours.timesteps(50)[0] == 981 and ours.level(-1).sigma > 0  # leading with steps_offset=1, not clean data
    assert bdia.VPSchedule.scaled_linear().timesteps(50)[0] == 999 and bdia.VPSchedule.scaled_linear().level(-1).sigma == 0
