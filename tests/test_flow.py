"""Rectified flows: the core schedule against diffusers' grids, the exact velocity of a mixture, exact round trips of
every method on a flow, convergence orders, the leapfrog's parasitic mode, and the flow schedulers and editing
pipeline on miniature SD3 and FLUX pipelines (all offline)."""

import math

import numpy as np
import pytest
import torch

import bdia
from bdia.experiments import relative_error
from bdia.ode import solve_flow
from conftest import make_mixture, rel_err

FLOW = bdia.FlowMatchSchedule(shift=3.0)


def uniform(n):
    return np.linspace(1.0, 1.0 / n, n)


# -- the schedule -----------------------------------------------------------------------------------------------------
GRIDS = [
    ({}, {}),
    ({"shift": 3.0}, {}),
    ({"use_dynamic_shifting": True}, {"mu": 0.8}),
    ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, {"mu": 1.3}),
    ({"use_dynamic_shifting": True}, {"mu": 1.15, "sigmas": "flux"}),
    ({"shift": 3.0, "shift_terminal": 0.1}, {}),
    ({"shift": 2.0, "use_karras_sigmas": True}, {}),
    ({"shift": 2.0, "use_exponential_sigmas": True}, {}),
    ({"shift": 2.0, "use_beta_sigmas": True}, {}),
]


@pytest.mark.parametrize("config, call", GRIDS, ids=lambda x: ",".join(f"{k}={v}" for k, v in x.items()) or "-")
@pytest.mark.parametrize("n", [4, 28])
def test_the_grids_are_diffusers_sigma_for_sigma(config, call, n):
    from diffusers import FlowMatchEulerDiscreteScheduler

    stock = FlowMatchEulerDiscreteScheduler(**config)
    sigmas = uniform(n) if call.get("sigmas") == "flux" else None
    stock.set_timesteps(n, sigmas=sigmas, mu=call.get("mu"))
    ours = bdia.FlowMatchSchedule.from_diffusers_config(stock.config, mu=call.get("mu"),
                                                        base_sigmas=uniform if sigmas is not None else None)
    grid = ours.timesteps(n)
    assert grid.tolist() == stock.sigmas.double().tolist() and grid[-1] == 0.0
    assert ours.level(float(grid[0])) == (1.0 - float(grid[0]), float(grid[0]))


def test_schedule_errors():
    with pytest.raises(ValueError, match="mu must be given"):
        bdia.FlowMatchSchedule(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="only one of"):
        bdia.FlowMatchSchedule(use_karras_sigmas=True, use_beta_sigmas=True)
    with pytest.raises(ValueError, match="outside the flow schedule's range"):
        FLOW.alpha(1.5)


# -- the exact model and the velocity convention -----------------------------------------------------------------------
def test_the_mixture_velocity_is_the_closed_form_of_one_gaussian():
    """One component N(mu, s^2 I): E[x | z] and E[eps | z] of z = (1 - t) x + t eps in closed form."""
    mu, s = torch.tensor([[0.7, -1.2]], dtype=torch.float64), 0.4
    model = bdia.toy.GaussianMixture(mu, std=s).velocity_model(FLOW)
    z = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (1.0, 0.73, 0.2, 0.01):
        a, var = 1 - t, (1 - t) ** 2 * s**2 + t**2
        x_hat = mu + a * s**2 / var * (z - a * mu)
        eps_hat = t / var * (z - a * mu)
        torch.testing.assert_close(model(z, t), eps_hat - x_hat, rtol=1e-12, atol=1e-12)


def test_the_velocity_ode_carries_noise_to_the_data_distribution():
    mixture = make_mixture(2, components=3, std=0.3)
    noise = torch.randn(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    data = solve_flow(mixture.velocity_model(FLOW), noise, 1.0, 0.0, rtol=1e-8, atol=1e-8)
    real = mixture.sample(20000, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(data.mean(0), real.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(data.std(0), real.std(0), atol=0.1, rtol=0)


def test_a_ddim_step_on_a_velocity_is_an_euler_step_also_from_t_one():
    z, v = (torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in (3, 4))
    for t, target in ((1.0, 0.7), (0.6, 0.2), (0.1, 0.0), (0.0, 0.3)):
        x0, eps = bdia.PredictionConfig("velocity").convert(v, z, FLOW.level(t))
        torch.testing.assert_close(bdia.steps.ddim_from_prediction(x0, eps, FLOW.level(target)), z + (target - t) * v,
                                   rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="an eps prediction at alpha = 0"):
        bdia.sample(lambda z, t: z, z, FLOW, 5, "ddim")
    with pytest.raises(ValueError, match="integrates in EDM space"):
        bdia.sample(bdia.from_velocity(lambda z, t: z), z, FLOW, 5, "heun")
    with pytest.raises(ValueError, match="runs on FlowMatchSchedule only"):
        bdia.sample(lambda z, t: z, z, bdia.VPSchedule.ddpm(), 5, "fireflow")


def test_bdia_in_flow_variables_is_the_formula_of_the_issue():
    """z_{i-1} = gamma z_{i+1} + (1 - gamma) z_i + (t_{i-1} - t_i + gamma (t_i - t_{i+1})) v(z_i, t_i)."""
    z_noisier, z, v = (torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
                       for k in range(3))
    for (t_n, t, t_c), gamma in (((1.0, 0.8, 0.55), 1.0), ((0.5, 0.3, 0.0), 0.7)):
        x0, eps = bdia.PredictionConfig("velocity").convert(v, z, FLOW.level(t))
        ours = bdia.steps.bdia_from_prediction(z_noisier, x0, eps, FLOW.level(t_n), FLOW.level(t_c), gamma)
        formula = gamma * z_noisier + (1 - gamma) * z + (t_c - t + gamma * (t - t_n)) * v
        torch.testing.assert_close(ours, formula, rtol=1e-13, atol=1e-13)


# -- round trips, orders, the parasitic mode ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "bdia:gamma=0.8", "obelm"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_exact_round_trips_on_the_exact_2d_flow(spec, dtype, tol):
    spec = bdia.MethodSpec.parse(spec)
    mixture = make_mixture(2, std=0.3)
    model, x0 = mixture.velocity_model(FLOW), mixture.sample(256).to(dtype)
    state = bdia.invert(model, x0, FLOW, 30, spec.method, **spec.options)
    assert rel_err(bdia.sample(model, state, FLOW, 30, spec.method), x0) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_lattice_round_trip_on_a_flow_is_bit_exact(dtype):
    mixture = make_mixture(2, std=0.3)
    model = mixture.velocity_model(FLOW)
    x0 = mixture.sample(64).to(dtype)
    state = bdia.invert(model, x0, FLOW, 25, "bdia", lattice=True)
    rec = bdia.sample(model, state, FLOW, 25, "bdia", lattice=True)
    assert torch.equal(rec, bdia.steps.lattice_round(x0, state.options["lattice"]))


@pytest.mark.parametrize("method", ["ddim", "midpoint", "fireflow"])
def test_the_other_solvers_invert_only_approximately(method):
    mixture = make_mixture(2, std=0.3)
    model, x0 = mixture.velocity_model(FLOW), mixture.sample(64)
    state = bdia.invert(model, x0, FLOW, 20, method)
    assert rel_err(bdia.sample(model, state, FLOW, 20, method), x0) > 1e-6


@pytest.mark.parametrize("method, order", [("ddim", 1.0), ("midpoint", 2.0), ("fireflow", 2.0), ("obelm", 2.0)])
def test_convergence_orders_on_a_uniform_flow_grid(method, order):
    schedule = bdia.FlowMatchSchedule(base_sigmas=uniform)
    mixture = make_mixture(2, std=0.5, components=4)
    model = mixture.velocity_model(schedule)
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = solve_flow(model, noise, 1.0, 0.0)
    counts = [16, 32, 64, 128]
    errors = [rel_err(bdia.sample(model, noise, schedule, n, method), exact) for n in counts]
    slope = -np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.35, (errors, slope)


def test_the_leapfrogs_parasitic_mode_grows_where_the_flow_contracts():
    """On dz/dt = c z (contracting towards t = 0 for c > 0) gamma = 1 has the roots r = -hc +- sqrt(1 + h^2 c^2): the
    parasitic one alternates in sign with |r| > 1, and the seed step excites it, so the error alternates and grows
    by |r| per step. For gamma < 1 the parasitic root is -gamma: the alternating mode dies out."""
    c, n = 4.0, 40
    schedule = bdia.FlowMatchSchedule(base_sigmas=uniform)
    model = bdia.from_velocity(lambda z, t: c * z)
    ts = schedule.timesteps(n)
    h = float(ts[0] - ts[1])
    exact = torch.exp(c * (ts - 1.0))
    errors = {}
    for gamma in (1.0, 0.5):
        _, states = bdia.sample(model, torch.ones(1, 1, dtype=torch.float64), schedule, n, "bdia", gamma=gamma,
                                return_trajectory=True)
        errors[gamma] = torch.stack([z.flatten()[0] for z in states]) - exact
    tail = errors[1.0][n // 2:]
    assert torch.all(torch.sign(tail[1:]) * torch.sign(tail[:-1]) < 0)  # it alternates
    growth = float((tail[-1] / tail[0]).abs() ** (1 / (len(tail) - 1)))
    assert growth == pytest.approx(h * c + math.sqrt(1 + (h * c) ** 2), rel=0.02) and growth > 1
    damped = errors[0.5][n // 2:]
    assert not torch.all(torch.sign(damped[1:]) * torch.sign(damped[:-1]) < 0)
    assert damped.abs().max() < 0.1 * tail.abs().max()


# -- the diffusers schedulers and pipelines ---------------------------------------------------------------------------
pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

from bdia.diffusers import (BDIAFlowEditPipeline, BDIAFlowMatchInverseScheduler, BDIAFlowMatchScheduler,  # noqa: E402
                            encode_image, tiny_flux, tiny_stable_diffusion_3)


def velocity(z, t):
    """A smooth, timestep-dependent stand-in for a velocity network (diffusers' tests feed t = sigma * 1000)."""
    t = float(t) / 1000
    return torch.tanh(z) * (1 - t) - 0.3 * z + 0.1 * t


def loop(scheduler, z, n=10, mu=None, sigmas=None, model=velocity):
    scheduler.set_timesteps(n, mu=mu, sigmas=sigmas)
    for t in scheduler.timesteps:
        z = scheduler.step(model(z, t), t, z).prev_sample
    return z


def sample32():
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("config, mu", [({"shift": 3.0}, None), ({"use_dynamic_shifting": True}, 0.9),
                                        ({"shift": 1.0, "shift_terminal": 0.05}, None)])
def test_gamma_zero_is_the_stock_euler_scheduler(config, mu):
    stock, ours = FlowMatchEulerDiscreteScheduler(**config), BDIAFlowMatchScheduler(**config, gamma=0.0)
    a, b = loop(stock, sample32(), mu=mu), loop(ours, sample32(), mu=mu)
    assert relative_error(b, a) < 1e-6
    assert torch.equal(ours.timesteps, stock.timesteps) and torch.equal(ours.sigmas, stock.sigmas)
    assert relative_error(loop(BDIAFlowMatchScheduler(**config, gamma=1.0), sample32(), mu=mu), a) > 1e-4


def test_scheduler_contract_and_refusals():
    stock, ours = FlowMatchEulerDiscreteScheduler(shift=3.0), BDIAFlowMatchScheduler(shift=3.0)
    for s in (stock, ours):
        s.set_timesteps(10)
        s.set_begin_index(4)
    x, noise = sample32(), torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = stock.timesteps[4:5].expand(2)
    torch.testing.assert_close(ours.scale_noise(x, t, noise), stock.scale_noise(x, t, noise))
    assert ours.index_for_timestep(stock.timesteps[3]) == 3 and ours.step_index is None and ours.begin_index == 4
    with pytest.raises(ValueError, match="stochastic_sampling"):
        BDIAFlowMatchScheduler(stochastic_sampling=True)
    with pytest.raises(ValueError, match="not an integer index"):
        ours.step(x, 3, x)
    with pytest.raises(ValueError, match="mu must be passed"):
        BDIAFlowMatchScheduler(use_dynamic_shifting=True).set_timesteps(10)


@pytest.mark.parametrize("lattice", [None, True])
def test_round_trip_through_the_flow_schedulers_keeps_the_state_precise_for_a_bfloat16_model(lattice):
    """The stock scheduler returns bfloat16 states for a bfloat16 model and loses the round trip; these return
    bfloat16 too, for the pipeline, but continue from their float32 copy."""

    def bf16_model(z, t):
        return velocity(z.to(torch.bfloat16), t)  # the output in the model's dtype, as a transformer's

    x0 = sample32()
    if lattice:
        x0 = bdia.steps.lattice_round(x0, bdia.default_lattice(torch.float32, FLOW, 12))
    inverse = BDIAFlowMatchInverseScheduler(shift=3.0, lattice=lattice)
    z = loop(inverse, x0, 12, model=bf16_model)
    state = inverse.inversion_state()
    forward = BDIAFlowMatchScheduler(shift=3.0, lattice=lattice)
    z = forward.resume_from(state, dtype=torch.bfloat16)
    forward.set_timesteps(12)
    for t in forward.timesteps:
        z = forward.step(bf16_model(z, t), t, z).prev_sample
    assert z.dtype == torch.bfloat16
    rec = forward.exact_sample
    assert torch.equal(rec.to(torch.bfloat16), z)
    if lattice:
        assert torch.equal(rec, x0)
    else:
        assert relative_error(rec, x0) < 1e-5
    # and the core's reconstruction from the scheduler's state agrees
    core = bdia.sample(bdia.from_velocity(lambda z, t: bf16_model(z, t * 1000).to(z.dtype)), state, FLOW, 12, "bdia")
    assert relative_error(core, x0) < 1e-5


@pytest.fixture(scope="module", params=["sd3", "flux"])
def flow_pipe(request):
    return tiny_stable_diffusion_3() if request.param == "sd3" else tiny_flux()


def _call_kwargs(pipe):
    return {"max_sequence_length": 32} if type(pipe).__name__.startswith("Flux") else {}


def test_the_stock_pipelines_run_with_the_scheduler_and_gamma_zero_is_euler(flow_pipe):
    kwargs = dict(num_inference_steps=6, output_type="latent", height=32, width=32, **_call_kwargs(flow_pipe))
    stock_scheduler = flow_pipe.scheduler
    try:
        outputs = {}
        for gamma in (None, 0.0, 1.0):
            if gamma is not None:
                flow_pipe.scheduler = BDIAFlowMatchScheduler.from_config(stock_scheduler.config, gamma=gamma)
            outputs[gamma] = flow_pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
        assert relative_error(outputs[0.0], outputs[None]) < 1e-5
        assert relative_error(outputs[1.0], outputs[None]) > 1e-3 and torch.isfinite(outputs[1.0]).all()
    finally:
        flow_pipe.scheduler = stock_scheduler


@pytest.mark.parametrize("method, options", [("bdia", {}), ("bdia", {"gamma": 0.96}), ("edict", {}),
                                             ("obelm", {})])
def test_the_edit_pipeline_round_trips_under_guidance(flow_pipe, cat, method, options):
    edit = BDIAFlowEditPipeline.from_pipe(flow_pipe)
    source = encode_image(flow_pipe, cat)
    state = edit.invert(cat, "a photo of a cat", 12, strength=0.75, guidance_scale=4.0, method=method, **options)
    calls = edit.num_network_calls
    assert state.num_inverted_steps == 9 and calls == bdia.REGISTRY[method].network_calls(9, "invert")
    rec = edit(inversion=state, output_type="latent").images
    assert relative_error(rec, source) < 1e-10
    other = edit("a photo of a tiger", inversion=state, output_type="latent").images
    assert relative_error(other, source) > 1e-3


def test_the_edit_pipeline_lattice_outputs_and_text_to_image(flow_pipe, cat):
    edit = BDIAFlowEditPipeline.from_pipe(flow_pipe)
    state = edit.invert(cat, "a cat", 10, lattice=True, latent_dtype=torch.float32)
    rec = edit(inversion=state, output_type="latent").images
    assert torch.equal(rec, bdia.steps.lattice_round(encode_image(flow_pipe, cat, dtype=torch.float32),
                                                     state.options["lattice"]))
    assert edit(inversion=state).images[0].size == (32, 32)
    assert edit(inversion=state, output_type="np").images.shape == (1, 32, 32, 3)
    a = edit("a dog", num_inference_steps=4, generator=torch.Generator().manual_seed(2), output_type="latent").images
    b = edit("a dog", num_inference_steps=4, generator=torch.Generator().manual_seed(2), output_type="latent").images
    assert torch.equal(a, b) and a.shape == (1, 4, 16, 16)
    with pytest.raises(TypeError, match="takes a StableDiffusion3Pipeline or a FluxPipeline"):
        BDIAFlowEditPipeline.from_pipe(object())


def test_flowedit_edits_through_the_pipeline_beside_its_source_branch(flow_pipe, cat):
    edit = BDIAFlowEditPipeline.from_pipe(flow_pipe)
    source = encode_image(flow_pipe, cat)
    state = edit.invert(cat, "a photo of a cat", 10, strength=0.6, guidance_scale=4.0, method="flowedit",
                        **_call_kwargs(flow_pipe))
    assert edit.num_network_calls == 0 and torch.equal(state.z, source)
    # the source prompt as the target: both branches see the same prompt, so the edit stays at the source up to
    # rounding; another prompt moves it, at one call on both branches per step
    same = edit(inversion=state, output_type="latent", **_call_kwargs(flow_pipe)).images
    assert same.shape == source.shape and relative_error(same, source) < 1e-12
    other = edit("a photo of a tiger", inversion=state, output_type="latent", **_call_kwargs(flow_pipe)).images
    assert relative_error(other, source) > 1e-3 and edit.num_network_calls == 12  # both branches, 6 steps


def test_feature_injection_shares_the_joint_attention_values_on_sd3_and_flux(flow_pipe, cat):
    from bdia.diffusers import FeatureInjection, PromptToPrompt

    kwargs = _call_kwargs(flow_pipe)
    edit = BDIAFlowEditPipeline.from_pipe(flow_pipe)
    state = edit.invert(cat, "a photo of a cat", 10, strength=0.8, guidance_scale=3.0, gamma=0.9, **kwargs)
    reconstruction = edit(inversion=state, output_type="latent", **kwargs).images
    calls = edit.num_network_calls
    plain = edit("a photo of a tiger", inversion=state, output_type="latent", guidance_scale=5.0, **kwargs).images
    # no control is the core's plain edit, bit for bit
    core = bdia.sample(edit.velocity_model("a photo of a tiger", 5.0, "", 1, kwargs.get("max_sequence_length")),
                       state, edit.schedule(state.shape), 10, "bdia")
    assert torch.equal(plain, core)
    control = FeatureInjection(features=0.5)
    controlled = edit("a photo of a tiger", inversion=state, output_type="latent", guidance_scale=5.0,
                      control=control, **kwargs).images
    assert edit.num_network_calls == 2 * calls and relative_error(controlled, plain) > 1e-5  # beyond rounding
    # the source branch, at the inversion's guidance, is the reconstruction; the edit keeps closer to it
    model = edit.velocity_model(["a photo of a cat", "a photo of a tiger"], [3.0, 5.0], "", 2,
                                kwargs.get("max_sequence_length"))
    both = bdia.sample(model, state, edit.schedule(state.shape), 10, "bdia", control=control)
    idle = bdia.sample(model, state, edit.schedule(state.shape), 10, "bdia", control=FeatureInjection(features=0.0))
    assert torch.equal(both[:1], idle[:1])  # the control never touches the source rows
    assert relative_error(both[:1], reconstruction) < 1e-4  # a batch of two rounds otherwise than one
    torch.testing.assert_close(both[1:], controlled, rtol=1e-4, atol=1e-5)
    assert relative_error(controlled, reconstruction) < relative_error(plain, reconstruction)
    # every joint block's image values by default; prompt-to-prompt needs cross-attention, which these lack
    assert control._feature_layers(edit.pipe.transformer) == [
        f"transformer_blocks.{i}.attn.to_v" for i in range(len(edit.pipe.transformer.transformer_blocks))]
    with pytest.raises(ValueError, match="no layer up_blocks.1.resnets.1; its joint attention values are "
                                         "transformer_blocks.0.attn.to_v"):
        edit("a photo of a tiger", inversion=state, output_type="latent", **kwargs,
             control=FeatureInjection(layers="up_blocks.1.resnets.1"))
    with pytest.raises(ValueError, match="no cross-attention"):
        edit("a photo of a tiger", inversion=state, output_type="latent", control=PromptToPrompt(), **kwargs)
    with pytest.raises(ValueError, match="a control edits an inversion"):
        edit("a photo of a tiger", num_inference_steps=4, control=control, **kwargs)
