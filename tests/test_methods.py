"""The method registry: every record's claims checked against what the drivers actually do.

Each record states its network calls, minimum steps, state and exactness; these tests measure them with a
counting model on an exact mixture, independently of the record, for every method in the registry (a method
added to the registry is checked without a line of test code).
"""

import pytest
import torch

import bdia
from bdia.methods import REGISTRY
from conftest import Steerable, make_mixture, rel_err


@pytest.fixture(scope="module")
def setup():
    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(3)
    return schedule, mixture.eps_model(schedule), mixture.sample(8, generator=torch.Generator().manual_seed(0))


def setup_for(name, setup):
    """The schedule and exact model a method runs on: a rectified flow for the flow methods, EDM's schedule for the
    EDM family, else the shared VP setup."""
    schedule, model, x0 = setup
    record = REGISTRY[name]
    if record.schedules and bdia.VPSchedule in record.schedules:
        return schedule, model, x0
    if record.schedules:
        schedule = bdia.FlowMatchSchedule(shift=3.0)
        return schedule, make_mixture(3).velocity_model(schedule), x0
    if record.family == "edm":
        schedule = bdia.EDMSchedule()
        return schedule, make_mixture(3).eps_model(schedule), x0
    if record.needs_guided_model:
        return schedule, Steerable(make_mixture(3), schedule), x0
    return schedule, model, x0


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("num_steps", [3, 8])
def test_the_stated_network_calls_are_the_counted_ones(setup, name, num_steps):
    schedule, model, x0 = setup_for(name, setup)
    record = REGISTRY[name]
    counting = bdia.CountingModel(model)
    if record.edits_beside_source:  # an edit, not a sampler: one call on the two-branch batch is one per branch
        bdia.sample(counting, bdia.invert(model, x0, schedule, num_steps, name).tile(2), schedule, num_steps, name)
        assert 2 * counting.calls == record.network_calls(num_steps, "sample")
    else:
        bdia.sample(counting, torch.randn_like(x0), schedule, num_steps, name)
        assert counting.calls == record.network_calls(num_steps, "sample")
    if record.invertible:
        for strength in (1.0, 0.7):
            counting.reset()
            state = bdia.invert(counting, x0, schedule, num_steps, name, strength=strength)
            walked = state.num_inverted_steps
            assert walked == int(strength * num_steps)
            if record.invert_calls_at_most:  # an optimisation that stops early
                assert counting.calls <= record.network_calls(walked, "invert")
            else:
                assert counting.calls == record.network_calls(walked, "invert")
            counting.reset()
            steps_seen = []
            bdia.sample(counting, state, schedule, num_steps, name, callback=lambda k, t, z: steps_seen.append(k))
            assert counting.calls == record.network_calls(walked, "reconstruct")
            assert len(steps_seen) == record.reconstruction_steps(walked)
            assert len(state.latents) == len(record.state)
            # the latents it keeps: its state, edit-friendly DDPM inversion's noise maps, Direct Inversion's
            # trajectory, RF-Inversion's source
            kept = len(state.latents) + sum(len(state.extras.get(key, ()))
                                            for key in ("noise_maps", "source_trajectory"))
            kept += "source" in state.extras
            assert record.stored_latents(walked) == kept
    else:
        with pytest.raises(ValueError, match="has no inverse"):
            record.network_calls(num_steps, "invert")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_minimum_steps_and_budgets(setup, name):
    schedule, model, x0 = setup_for(name, setup)
    record = REGISTRY[name]
    if record.min_steps > 1:
        with pytest.raises(ValueError, match=f"needs at least {record.min_steps} steps"):
            bdia.sample(model, x0, schedule, record.min_steps - 1, name)
    if record.edits_beside_source:
        with pytest.raises(ValueError, match="no sampler from noise"):
            bdia.sample(model, x0, schedule, 4, name)
        return
    for budget in (4, 10, 11):
        steps = record.steps_for_budget(budget)
        # the most steps within the budget: one more would exceed it
        assert record.network_calls(steps) <= budget < record.network_calls(steps + 1)
        counting = bdia.CountingModel(model)
        bdia.sample(counting, torch.randn_like(x0), schedule, steps, name)
        assert counting.calls <= budget


@pytest.mark.parametrize("name", [n for n, m in REGISTRY.items() if m.exact])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-11), (torch.float32, 1e-4)])
def test_every_exact_method_round_trips(setup, name, dtype, tol):
    schedule, model, x0 = setup_for(name, setup)
    if REGISTRY[name].family == "edm":
        tol *= schedule.init_noise_sigma(20)  # rounding scales with the states, up to sigma_max = 80 times the data
    state = bdia.invert(model, x0.to(dtype), schedule, 20, name)
    assert rel_err(bdia.sample(model, state, schedule, 20, name), x0) < tol


def test_options_defaults_and_checks():
    assert bdia.method_defaults("bdia") == {"gamma": 1.0, "tolerance": None, "lattice": None}
    assert bdia.method_defaults("edict") == {"p": 0.93, "leapfrog": True}
    assert REGISTRY["bdia"].resolve({"gamma": 0.5}) == {"gamma": 0.5, "tolerance": None, "lattice": None}
    assert REGISTRY["bdia"].resolve({"lattice": True}) == {"gamma": 1.0, "tolerance": None, "lattice": "auto"}
    assert REGISTRY["bdia"].resolve({"gamma": "auto"}) == {"gamma": "auto", "tolerance": 1e-6, "lattice": None}
    with pytest.raises(ValueError, match="unknown option"):
        REGISTRY["obelm"].resolve({"gamma": 0.5})
    with pytest.raises(TypeError, match="coefficient other than 1"):
        REGISTRY["edict"].resolve({"lattice": True})
    with pytest.raises(ValueError, match="unknown method 'bdai'"):
        bdia.get_method("bdai")
    with pytest.raises(ValueError, match="kind must be"):
        REGISTRY["bdia"].network_calls(5, "forward")
    assert bdia.METHODS == tuple(REGISTRY) and set(bdia.INVERTIBLE_METHODS) == {n for n, m in REGISTRY.items()
                                                                               if m.invertible}


def test_o_belm_is_bdia_with_its_step_dependent_gamma():
    """The registry runs O-BELM as BDIA-DDIM with gamma_i = (h_i/h_{i+1})^2 alpha_{i-1}/alpha_{i+1}; the BELM paper's
    own update, written out here, agrees with it."""
    schedule = bdia.VPSchedule.scaled_linear()
    gen = torch.Generator().manual_seed(3)
    z_noisier, z, eps = (torch.randn(16, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    for t_noisier, t, t_cleaner in [(999, 899, 799), (600, 300, 20), (80, 40, -1)]:
        lv_n, lv, lv_c = (schedule.level(x) for x in (t_noisier, t, t_cleaner))
        h, h_n = lv.edm_sigma - lv_c.edm_sigma, lv_n.edm_sigma - lv.edm_sigma
        belm = ((h / h_n) ** 2 * lv_c.alpha / lv_n.alpha * z_noisier
                + (h_n**2 - h**2) / h_n**2 * lv_c.alpha / lv.alpha * z
                - h * (h + h_n) / h_n * lv_c.alpha * eps)
        torch.testing.assert_close(bdia.steps.obelm_step(z_noisier, z, eps, lv_n, lv, lv_c), belm, rtol=1e-12,
                                   atol=1e-12)


def test_method_specs_share_the_registry_checks():
    spec = bdia.MethodSpec.parse("bdia:gamma=1.0,lattice=true")
    assert spec.record is REGISTRY["bdia"] and spec.options == {"gamma": 1.0, "lattice": True}
    with pytest.raises(ValueError, match="lattice needs gamma = 1"):
        bdia.MethodSpec.parse("bdia:gamma=0.5,lattice=true")
    with pytest.raises(TypeError, match="gamma must be a number in \\[0, 1\\] or 'auto', got 'abc'"):
        bdia.MethodSpec.parse("bdia:gamma=abc")


def test_a_state_counts_the_bytes_of_what_it_keeps():
    """``InversionState.nbytes`` against the registry's count of stored latents: one latent's bytes times
    ``stored_latents(K)`` for every method that keeps latents only."""
    schedule = bdia.VPSchedule.ddpm()
    model = make_mixture(2, seed=0).eps_model(schedule)
    x0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method in ("ddim", "bdia", "edict", "ddpm-inversion", "direct-inversion"):
        state = bdia.invert(model, x0, schedule, 10, method, strength=0.8)
        latent = x0.numel() * x0.element_size()
        assert state.nbytes == bdia.REGISTRY[method].stored_latents(8) * latent, method
