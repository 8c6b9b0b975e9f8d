"""Shared fixtures: schedules and exact models small enough for 2 CPU cores."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import bdia
from bdia.toy import GaussianMixture

settings.register_profile("default", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("BDIA_HYPOTHESIS_PROFILE", "default"))

SCHEDULES = {
    "sd": bdia.VPSchedule.scaled_linear,
    "ddpm": bdia.VPSchedule.ddpm,
    "edm": bdia.EDMSchedule,
}


def make_mixture(dim: int, seed: int = 0, components: int = 5, std: float = 0.2) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(torch.randn(components, dim, generator=g, dtype=torch.float64), std=std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(params=sorted(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


@pytest.fixture
def sd_schedule():
    return bdia.VPSchedule.scaled_linear()


@pytest.fixture(scope="module")
def pipe():
    """A miniature Stable Diffusion pipeline with random weights (built in code, offline)."""
    pytest.importorskip("diffusers")
    from bdia.diffusers import tiny_stable_diffusion

    return tiny_stable_diffusion(seed=0)


@pytest.fixture(scope="module")
def cat():
    """Chelsea the cat, a real photograph that ships inside scikit-image."""
    from skimage import data

    return data.chelsea()


class Steerable:
    """A guided model whose unconditional branch returns its embedding itself: null-text inversion can then hit the
    pivot exactly, which checks the optimisation's bookkeeping (targets, steps, reuse) independently of a network."""

    guidance_scale = 3.0

    def __init__(self, mixture, schedule):
        self.eps, self.dim = mixture.eps_model(schedule), mixture.dim

    def conditional(self, z, t):
        return self.eps(z, t)

    def unconditional(self, z, t, null_embedding):
        return null_embedding

    def guided(self, z, t, null_embedding):
        return null_embedding + self.guidance_scale * (self.eps(z, t) - null_embedding)

    def __call__(self, z, t):
        return self.guided(z, t, self.null_embedding(z.shape[0]))

    def null_embedding(self, batch):
        return torch.zeros(batch, self.dim, dtype=torch.float64)

    def conditional_embedding(self, batch):
        return torch.zeros(batch, self.dim, dtype=torch.float64)
