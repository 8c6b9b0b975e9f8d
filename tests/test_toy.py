"""The exact models are exact: scores against autograd, ODE solutions against closed forms."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import bdia
from bdia import toy
from bdia.ode import solve_probability_flow
from conftest import make_mixture, rel_err


def log_density(mixture, z, alpha, sigma):
    var = alpha**2 * mixture.std**2 + sigma**2
    d2 = ((z[:, None, :] - alpha * mixture.means[None]) ** 2).sum(-1)
    comp = torch.log(mixture.weights) - 0.5 * mixture.dim * torch.log(2 * math.pi * var) - 0.5 * d2 / var
    return torch.logsumexp(comp, dim=-1)


@given(seed=st.integers(0, 10**6), dim=st.sampled_from([1, 2, 5]), t=st.floats(0, 999))
def test_eps_is_minus_sigma_times_the_autograd_score(seed, dim, t):
    schedule = bdia.VPSchedule.scaled_linear()
    g = torch.Generator().manual_seed(seed)
    mixture = toy.GaussianMixture(torch.randn(3, dim, generator=g, dtype=torch.float64),
                                  std=torch.rand(3, generator=g, dtype=torch.float64) + 0.05,
                                  weights=torch.rand(3, generator=g, dtype=torch.float64) + 0.1)
    lvl = schedule.level(t)
    z = torch.randn(6, dim, generator=g, dtype=torch.float64).requires_grad_(True)
    (score,) = torch.autograd.grad(log_density(mixture, z, lvl.alpha, lvl.sigma).sum(), z)
    torch.testing.assert_close(mixture.eps_model(schedule)(z.detach(), t), -lvl.sigma * score, rtol=1e-9, atol=1e-9)


def test_posterior_mean_denoiser_and_eps_agree():
    schedule = bdia.VPSchedule.ddpm()
    mixture = make_mixture(4)
    z = torch.randn(10, 4, dtype=torch.float64)
    lvl = schedule.level(300)
    x_hat = mixture.posterior_mean(z, lvl.alpha, lvl.sigma)
    torch.testing.assert_close(mixture.eps(z, lvl.alpha, lvl.sigma), (z - lvl.alpha * x_hat) / lvl.sigma)
    # the EDM denoiser through the conversion helpers, both ways
    denoiser = bdia.edm_denoiser_from_eps(mixture.eps_model(schedule), schedule)
    s = lvl.edm_sigma
    torch.testing.assert_close(denoiser(z, s), mixture.denoiser()(z, s), rtol=1e-8, atol=1e-8)
    eps_again = bdia.eps_model_from_denoiser(mixture.denoiser(), schedule)
    torch.testing.assert_close(eps_again(z, 300.0), mixture.eps_model(schedule)(z, 300.0), rtol=1e-8, atol=1e-8)


def test_sampling_statistics():
    mixture = toy.GaussianMixture([[0.0, 0.0], [4.0, 0.0]], std=0.5, weights=[3, 1])
    x = mixture.sample(40000, generator=torch.Generator().manual_seed(0))
    assert x.mean(0).tolist() == pytest.approx([1.0, 0.0], abs=0.03)
    assert x[:, 1].std().item() == pytest.approx(0.5, abs=0.01)


def test_bad_mixture_arguments():
    with pytest.raises(ValueError, match="means must have shape"):
        toy.GaussianMixture(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="std must be a non-negative scalar"):
        toy.GaussianMixture(torch.zeros(3, 2), std=-1.0)
    with pytest.raises(ValueError, match="weights must be 3 positive numbers"):
        toy.GaussianMixture(torch.zeros(3, 2), weights=[1, 0, 1])
    with pytest.raises(ValueError, match="states have 3 dimensions per sample, the mixture has 2"):
        toy.GaussianMixture(torch.zeros(3, 2)).eps(torch.zeros(4, 3), 1.0, 0.5)


def test_ideal_denoiser_on_digits_collapses_onto_the_data(monkeypatch):
    data = toy.load_digits_data()
    assert data.shape == (1797, 64) and data.min() == -1 and data.max() == 1
    ideal = toy.ideal_denoiser(data)
    noisy = data[:50] + 0.05 * torch.randn(50, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ideal.denoiser()(noisy, 0.05), data[:50], rtol=0, atol=1e-6)
    # chunking over the batch changes nothing
    full = ideal.eps(noisy, 0.8, 0.6)
    monkeypatch.setattr(toy, "_CHUNK_ELEMENTS", 1797 * 7)
    torch.testing.assert_close(ideal.eps(noisy, 0.8, 0.6), full, rtol=0, atol=1e-12)


def test_ideal_denoiser_samples_are_data_points():
    data = toy.load_digits_data()[:200]
    schedule = bdia.VPSchedule.scaled_linear()
    model = toy.ideal_denoiser(data).eps_model(schedule)
    out = bdia.sample(model, torch.randn(16, 64, dtype=torch.float64), schedule, 50, "bdia", gamma=0.5)
    nearest = torch.cdist(out, data).min(-1).values
    assert nearest.max() < 0.05


@pytest.mark.parametrize("schedule", [bdia.VPSchedule.scaled_linear(), bdia.EDMSchedule()])
def test_reference_solution_for_a_gaussian_is_the_closed_form(schedule):
    """For N(mu, s^2 I) data the flow is x(sigma) = mu + (x_T - mu) sqrt(sigma^2 + s^2) / sqrt(sigma_T^2 + s^2)."""
    mu, std = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 0.3
    gaussian = toy.GaussianMixture(mu, std=std)
    model = gaussian.eps_model(schedule)
    grid = schedule.timesteps(10)
    t_start, t_mid = float(grid[0]), float(grid[5])
    z = torch.randn(20, 3, dtype=torch.float64) * schedule.init_noise_sigma(10)
    z_end, (z_mid,) = solve_probability_flow(model, z, schedule, t_start, -1.0 if schedule.level(-1.0).sigma == 0
                                             else 0.0, t_eval=[t_mid])

    def exact(t):
        lvl0, lvl = schedule.level(t_start), schedule.level(t)
        x_start = z / lvl0.alpha
        x = mu + (x_start - mu) * math.sqrt(lvl.edm_sigma**2 + std**2) / math.sqrt(lvl0.edm_sigma**2 + std**2)
        return lvl.alpha * x

    torch.testing.assert_close(z_mid, exact(t_mid), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(z_end, exact(float(grid[-1])), rtol=1e-8, atol=1e-8)


def test_samplers_converge_to_the_reference():
    schedule = bdia.EDMSchedule(sigma_max=20.0)
    model = make_mixture(2, std=0.5).eps_model(schedule)
    z = torch.randn(16, 2, dtype=torch.float64) * 20
    ref = solve_probability_flow(model, z, schedule, 20.0, 0.0)
    assert rel_err(bdia.sample(model, z, schedule, 200, "heun"), ref) < 5e-4


def test_reference_solution_rejects_starting_at_the_data_end():
    schedule = bdia.VPSchedule.scaled_linear()
    with pytest.raises(ValueError, match="cannot start at the data end"):
        solve_probability_flow(lambda z, t: z, torch.zeros(2, 2), schedule, -1.0, 500.0)


def test_two_moons_helper():
    moons = toy.two_moons_mixture(8, std=0.05)
    assert moons.num_components == 8 and moons.dim == 2
