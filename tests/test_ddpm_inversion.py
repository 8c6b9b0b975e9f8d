"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024) as a registry method: the posterior step
against DDPM's own formulas, exact regeneration from the stored noise maps, edits that keep them, the pipeline."""

import math

import pytest
import torch

import bdia
from bdia import steps
from bdia.experiments import relative_error
from conftest import make_mixture


def test_the_posterior_step_is_ddpms():
    """Ho et al. (2020), eqs. 6-7: for consecutive timesteps the posterior of z_{t-1} given z_t and x0 has mean
    sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) z_t and variance
    (1 - abar_{t-1}) / (1 - abar_t) beta_t."""
    schedule = bdia.VPSchedule.ddpm()
    abar = schedule.alphas_cumprod.double()
    x0, z = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    for t in (1, 10, 500, 999):
        level, target = schedule.level(float(t)), schedule.level(float(t - 1))
        beta = 1 - abar[t] / abar[t - 1]
        variance = (1 - abar[t - 1]) / (1 - abar[t]) * beta
        std = steps.ddpm_posterior_std(level, target)
        assert math.isclose(std ** 2, float(variance), rel_tol=1e-9)
        eps = (z - level.alpha * x0) / level.sigma  # the prediction an exact model makes of this x0
        mean = steps.ddpm_mean_from_prediction(x0, eps, target, std)
        expected = (abar[t - 1].sqrt() * beta / (1 - abar[t])) * x0 + ((1 - beta).sqrt() * (1 - abar[t - 1])
                                                                      / (1 - abar[t])) * z
        assert torch.allclose(mean, expected, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def mixture_setup():
    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(2)
    return schedule, mixture, mixture.eps_model(schedule), mixture.sample(64, generator=torch.Generator().manual_seed(1))


def test_regeneration_is_exact_and_edits_keep_the_noise_maps(mixture_setup):
    schedule, mixture, model, x0 = mixture_setup
    state = bdia.invert(model, x0, schedule, 20, "ddpm-inversion", strength=0.6)
    maps = state.extras["noise_maps"]
    assert len(maps) == 12 and bdia.REGISTRY["ddpm-inversion"].stored_latents(12) == 1 + len(maps)
    assert relative_error(bdia.sample(model, state, schedule, 20, "ddpm-inversion"), x0) < 1e-12
    # another seed draws other noisy versions: another inversion, still exact
    other = bdia.invert(model, x0, schedule, 20, "ddpm-inversion", strength=0.6, seed=1)
    assert not torch.equal(other.z, state.z)
    assert relative_error(bdia.sample(model, other, schedule, 20, "ddpm-inversion"), x0) < 1e-12
    # an edit: the mixture moved by 0.3 along both axes regenerates the same noise maps; each point follows the
    # move (what the kept noise keeps is the point's place within its component)
    level = schedule.level
    moved = lambda z, t: model(z - level(t).alpha * 0.3, t)  # noqa: E731  eps of the moved mixture
    edited = bdia.sample(moved, state, schedule, 20, "ddpm-inversion")
    shift = edited - x0
    assert torch.allclose(shift.mean(0), torch.full((2,), 0.3, dtype=shift.dtype), atol=0.05)
    assert shift.std(0).max() < 0.1


def test_sampling_from_noise_is_seeded_ddpm(mixture_setup):
    schedule, _, model, x0 = mixture_setup
    noise = torch.randn_like(x0)
    a, b = (bdia.sample(model, noise, schedule, 10, "ddpm-inversion", seed=s) for s in (0, 0))
    c = bdia.sample(model, noise, schedule, 10, "ddpm-inversion", seed=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    ddim = bdia.sample(model, noise, schedule, 10, "ddim")
    assert relative_error(a, ddim) > 1e-3  # stochastic, not DDIM


def test_it_runs_on_variance_preserving_schedules_only():
    schedule = bdia.FlowMatchSchedule()
    mixture = make_mixture(2)
    with pytest.raises(bdia.UsageError, match="DDPM's posterior step is written for a variance-preserving schedule"):
        bdia.invert(mixture.velocity_model(schedule), mixture.sample(4), schedule, 10, "ddpm-inversion")
    with pytest.raises(bdia.UsageError, match="seed must be an integer >= 0"):
        bdia.sample(lambda z, t: z, torch.randn(2, 2), bdia.VPSchedule.ddpm(), 10, "ddpm-inversion", seed=-1)


def test_the_edit_pipeline_inverts_and_regenerates_with_it(pipe, cat):
    from bdia.diffusers import BDIAEditPipeline, encode_image

    edit = BDIAEditPipeline.from_pipe(pipe)
    state = edit.invert(cat, "a cat", num_inference_steps=10, strength=0.8, guidance_scale=3.0,
                        method="ddpm-inversion")
    assert len(state.extras["noise_maps"]) == 8
    rec = edit(inversion=state, output_type="latent").images
    assert relative_error(rec, encode_image(pipe, cat, dtype=torch.float64)) < 1e-10
    tiger = edit("a tiger", inversion=state, guidance_scale=7.5, output_type="latent").images
    assert relative_error(tiger, rec) > 1e-4
