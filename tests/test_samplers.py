"""Drivers: network-call counts, equivalences, convergence orders, options and every bad input."""


import numpy as np
import pytest
import torch

import bdia
from bdia.ode import solve_probability_flow
from conftest import make_mixture, rel_err


@pytest.fixture
def setup(sd_schedule):
    mixture = make_mixture(3)
    return sd_schedule, mixture.eps_model(sd_schedule), mixture.sample(8, generator=torch.Generator().manual_seed(0))


#: the methods that run on any schedule (RF-Solver and FireFlow run on rectified flows: tests/test_flow.py)
ANY_SCHEDULE = [m for m in bdia.METHODS if not bdia.REGISTRY[m].schedules and not bdia.REGISTRY[m].needs_guided_model]

SAMPLE_CALLS = {"ddim": lambda n: n, "bdia": lambda n: n, "obelm": lambda n: n, "edict": lambda n: 2 * n,
                "heun": lambda n: 2 * n - 1, "bdia-edm": lambda n: 2 * n - 1, "direct-inversion": lambda n: n}
INVERT_CALLS = {"ddim": lambda n: n, "bdia": lambda n: n, "obelm": lambda n: n, "edict": lambda n: 2 * n,
                "bdia-edm": lambda n: 2 * n - 2, "direct-inversion": lambda n: n}
RECONSTRUCT_CALLS = {"ddim": lambda n: n, "bdia": lambda n: n - 1, "obelm": lambda n: n - 1, "edict": lambda n: 2 * n,
                     "bdia-edm": lambda n: 2 * n - 3, "direct-inversion": lambda n: n}


@pytest.mark.parametrize("num_steps", [2, 3, 10])
@pytest.mark.parametrize("method", ANY_SCHEDULE)
def test_network_calls(setup, method, num_steps):
    schedule, model, x0 = setup
    counting = bdia.CountingModel(model)
    bdia.sample(counting, torch.randn_like(x0), schedule, num_steps, method)
    assert counting.calls == SAMPLE_CALLS[method](num_steps)
    if method in bdia.INVERTIBLE_METHODS:
        counting.reset()
        state = bdia.invert(counting, x0, schedule, num_steps, method)
        assert counting.calls == INVERT_CALLS[method](num_steps)
        counting.reset()
        bdia.sample(counting, state, schedule, num_steps, method)
        assert counting.calls == RECONSTRUCT_CALLS[method](num_steps)


def test_bdia_with_gamma_zero_is_ddim(setup):
    schedule, model, x0 = setup
    noise = torch.randn_like(x0)
    for n in (2, 7, 25):
        assert torch.equal(bdia.sample(model, noise, schedule, n, "bdia", gamma=0.0),
                           bdia.sample(model, noise, schedule, n, "ddim"))


@pytest.mark.parametrize("schedule", [bdia.EDMSchedule(), bdia.VPSchedule.ddpm(spacing="karras")])
def test_bdia_edm_with_gamma_zero_is_heun(schedule):
    model = make_mixture(3).eps_model(schedule)
    noise = torch.randn(8, 3, dtype=torch.float64) * schedule.init_noise_sigma(10)
    for n in (2, 10):
        torch.testing.assert_close(bdia.sample(model, noise, schedule, n, "bdia-edm", gamma=0.0),
                                   bdia.sample(model, noise, schedule, n, "heun"), rtol=1e-13, atol=1e-13)


def test_bdia_edm_with_euler_forward_matches_bdia_on_an_edm_schedule():
    """With alpha = 1 both BDIA variants share one form; with one step (Euler only) they coincide."""
    schedule = bdia.EDMSchedule()
    model = make_mixture(3).eps_model(schedule)
    noise = torch.randn(8, 3, dtype=torch.float64) * 80
    # two steps: the first BDIA-EDM step is Heun, not DDIM, so compare the second update alone
    a = bdia.sample(model, noise, schedule, 2, "bdia-edm", return_trajectory=True)[1]
    z_prev, z_cur = a[0], a[1]
    ts = schedule.timesteps(2)
    lv = [schedule.level(t) for t in ts]
    expected = bdia.steps.bdia_step(z_prev, z_cur, model(z_cur, float(ts[1])), lv[0], lv[1], lv[2], 1.0)
    torch.testing.assert_close(a[2], expected)


@pytest.mark.parametrize("method, order", [("ddim", 1.0), ("heun", 2.0), ("obelm", 2.0)])
def test_convergence_order(method, order):
    """Global error against a DOP853 reference falls as N^-order (EDM's grid keeps the last step small)."""
    schedule = bdia.EDMSchedule(sigma_max=20.0)
    mixture = make_mixture(2, std=0.5, components=4)
    model = mixture.eps_model(schedule)
    z = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    ref = solve_probability_flow(model, z, schedule, 20.0, 0.0)
    counts = [8, 16, 32, 64]
    errors = [rel_err(bdia.sample(model, z, schedule, n, method), ref) for n in counts]
    slope = -np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.35, (errors, slope)


def test_trajectory_callback_and_progress(setup, capsys):
    schedule, model, x0 = setup
    seen = []
    out, traj = bdia.sample(model, torch.randn_like(x0), schedule, 6, "bdia", return_trajectory=True,
                            progress=True, callback=lambda k, t, z: seen.append((k, t, z.shape)))
    assert len(traj) == 7 and torch.equal(traj[-1], out)
    assert [k for k, _, _ in seen] == list(range(6))
    assert [t for _, t, _ in seen] == schedule.timesteps(6)[1:].tolist()
    state, up = bdia.invert(model, x0, schedule, 6, "bdia", return_trajectory=True)
    assert len(up) == 7 and torch.equal(up[0], x0) and torch.equal(up[-1], state.z)
    # reconstruction from the pair retraces the inverted trajectory
    _, down = bdia.sample(model, state, schedule, 6, "bdia", return_trajectory=True)
    for a, b in zip(down, reversed(up)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_inversion_state_contents(setup):
    schedule, model, x0 = setup
    assert len(bdia.invert(model, x0, schedule, 4, "bdia").latents) == 2
    assert len(bdia.invert(model, x0, schedule, 4, "ddim").latents) == 1
    edict = bdia.invert(model, x0, schedule, 4, "edict", p=0.9, leapfrog=False)
    assert edict.options == {"p": 0.9, "leapfrog": False} and edict.shape == tuple(x0.shape)
    assert edict.to(torch.float32).dtype == torch.float32
    # reconstruction picks the options up from the state
    torch.testing.assert_close(bdia.sample(model, edict, schedule, 4, "edict"), x0, rtol=1e-11, atol=1e-11)


def test_edict_leapfrog_matters_and_round_trips_either_way(setup):
    schedule, model, x0 = setup
    noise = torch.randn_like(x0)
    assert not torch.allclose(bdia.sample(model, noise, schedule, 6, "edict", leapfrog=True),
                              bdia.sample(model, noise, schedule, 6, "edict", leapfrog=False))
    for leapfrog in (True, False):
        state = bdia.invert(model, x0, schedule, 7, "edict", leapfrog=leapfrog)
        assert rel_err(bdia.sample(model, state, schedule, 7, "edict"), x0) < 1e-12


def test_fixed_seed_regression_values(sd_schedule):
    """Full sampling loops from fixed noise; the values were recorded from this implementation (float64): a
    regression check, kept only beside the comparison with the exact ODE solution."""
    mixture = make_mixture(2, seed=7)
    model = mixture.eps_model(sd_schedule)
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    samples = {m: bdia.sample(model, noise, sd_schedule, 10, m) for m in ANY_SCHEDULE}
    results = {m: x.sum().item() for m, x in samples.items()}
    expected = {"ddim": 3.2459908648105595, "edict": 6.610158488192763, "bdia": 3.6721862156400835,
                "obelm": 4.000497991605722, "heun": 3.528299593071728, "bdia-edm": 3.722728641799274,
                "direct-inversion": 3.2459908648105595}
    assert results == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # from noise there is no trajectory to pin a source branch to: Direct Inversion samples as DDIM, bit for bit
    assert torch.equal(samples["direct-inversion"], samples["ddim"])
    # the independent check beside the recorded values: every method approximates the exact ODE solution from
    # the same noise, the second-order Heun better than first-order DDIM at this coarse grid
    from bdia.ode import solve_probability_flow

    grid = sd_schedule.timesteps(10)
    exact = solve_probability_flow(model, noise, sd_schedule, float(grid[0]), float(grid[-1]))
    errors = {m: ((x - exact).norm() / exact.norm()).item() for m, x in samples.items()}
    assert all(err < 0.5 for err in errors.values()), errors
    assert errors["heun"] < errors["ddim"], errors


# -- bad input ------------------------------------------------------------------------------------

def test_unknown_method_lists_valid_ones(setup):
    schedule, model, x0 = setup
    with pytest.raises(ValueError, match="unknown method 'bdai'; valid methods: 'ddim', 'edict', 'bdia'"):
        bdia.sample(model, x0, schedule, 10, "bdai")
    with pytest.raises(ValueError, match="has no inverse; invertible methods"):
        bdia.invert(model, x0, schedule, 10, "heun")


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_gamma_out_of_range(setup, gamma):
    schedule, model, x0 = setup
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        bdia.sample(model, x0, schedule, 10, "bdia", gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        bdia.invert(model, x0, schedule, 10, "bdia-edm", gamma=gamma)


def test_inversion_with_gamma_zero(setup):
    schedule, model, x0 = setup
    for method in ("bdia", "bdia-edm"):
        with pytest.raises(ValueError, match="inversion needs gamma > 0: the inverse update divides by gamma"):
            bdia.invert(model, x0, schedule, 10, method, gamma=0)


@pytest.mark.parametrize("method", ["bdia", "obelm", "bdia-edm"])
def test_too_few_steps_for_multistep_methods(setup, method):
    schedule, model, x0 = setup
    with pytest.raises(ValueError, match=f"method '{method}' needs at least 2 steps \\(a two-step method"):
        bdia.sample(model, x0, schedule, 1, method)
    with pytest.raises(ValueError, match="at least 2 steps"):
        bdia.invert(model, x0, schedule, 1, method)
    with pytest.raises(ValueError, match="inverts 1 step"):
        bdia.invert(model, x0, schedule, 10, method, strength=0.1)


def test_bad_step_counts_and_options(setup):
    schedule, model, x0 = setup
    with pytest.raises(ValueError, match=r"method 'ddim' needs at least 1 step, got num_steps=0"):
        bdia.sample(model, x0, schedule, 0, "ddim")
    with pytest.raises(TypeError, match="num_steps must be an integer"):
        bdia.sample(model, x0, schedule, 10.0, "ddim")
    with pytest.raises(TypeError, match="unknown option.*gama.*allowed: callback, gamma"):
        bdia.sample(model, x0, schedule, 10, "bdia", gama=0.5)
    with pytest.raises(TypeError, match="unknown option.*gamma"):
        bdia.sample(model, x0, schedule, 10, "edict", gamma=0.5)
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        bdia.invert(model, x0, schedule, 10, "edict", p=0)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        bdia.invert(model, x0, schedule, 10, "bdia", strength=1.2)
    with pytest.raises(TypeError, match="callback must be callable"):
        bdia.sample(model, x0, schedule, 10, "bdia", callback=3)


def test_bad_tensors(setup):
    schedule, model, x0 = setup
    with pytest.raises(TypeError, match="init must be a torch.Tensor"):
        bdia.sample(model, x0.numpy(), schedule, 10, "bdia")
    with pytest.raises(TypeError, match="floating-point"):
        bdia.invert(model, x0.long(), schedule, 10, "bdia")
    bad = x0.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x0 contains non-finite values"):
        bdia.invert(model, bad, schedule, 10, "bdia")
    with pytest.raises(ValueError, match="the model returned"):
        bdia.sample(lambda z, t: z[:1], x0, schedule, 10, "ddim")
    with pytest.raises(TypeError, match="schedule must be a bdia Schedule"):
        bdia.sample(model, x0, "sd", 10, "ddim")


@pytest.mark.parametrize("method", ANY_SCHEDULE)
def test_non_finite_values_name_the_step(setup, method):
    schedule, model, x0 = setup
    bad_t = float(schedule.timesteps(10)[4])

    def broken(z, t):
        eps = model(z, t)
        return eps * float("inf") if t == bad_t else eps

    # Heun's corrector evaluates the network at the end of a step: one step earlier
    step = 4 if method in ("heun", "bdia-edm") else 5
    with pytest.raises(bdia.NonFiniteError, match=f"first appeared at step {step} of 10 of '{method}' sampling"):
        bdia.sample(broken, torch.randn_like(x0), schedule, 10, method)


def test_non_finite_during_inversion(setup):
    schedule, model, x0 = setup
    bad_t = float(schedule.timesteps(10)[-4])  # t = 299: the state there is stepped from on step 4
    broken = lambda z, t: model(z, t) * (float("nan") if t == bad_t else 1.0)  # noqa: E731
    with pytest.raises(bdia.NonFiniteError, match="at step 4 of 10 of 'bdia' inversion"):
        bdia.invert(broken, x0, schedule, 10, "bdia")


def test_state_mismatches_are_named(setup):
    schedule, model, x0 = setup
    state = bdia.invert(model, x0, schedule, 10, "bdia", gamma=0.96)
    with pytest.raises(ValueError, match="method mismatch: this inversion state was made by 'bdia', not 'obelm'"):
        bdia.sample(model, state, schedule, 10, "obelm")
    with pytest.raises(ValueError, match="step count mismatch: .*num_steps=10, not 20"):
        bdia.sample(model, state, schedule, 20, "bdia")
    with pytest.raises(ValueError, match="option mismatch: the state was inverted with gamma=0.96"):
        bdia.sample(model, state, schedule, 10, "bdia", gamma=1.0)
    bad_shape = bdia.InversionState("bdia", 10, state.options, state.timesteps, (state.latents[0], x0[:3]),
                                    state.shape)
    with pytest.raises(ValueError, match=r"shape mismatch: state.latents\[1\] has shape \(3, 3\)"):
        bdia.sample(model, bad_shape, schedule, 10, "bdia")
    with pytest.raises(ValueError, match="schedule mismatch"):
        bdia.sample(model, state, bdia.VPSchedule.ddpm(), 10, "bdia")
    with pytest.raises(ValueError, match="schedule mismatch"):
        bdia.sample(model, state, schedule.with_spacing("leading"), 10, "bdia")
