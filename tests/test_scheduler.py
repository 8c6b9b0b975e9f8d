"""diffusers' scheduler contract for BDIAScheduler / BDIAInverseScheduler, and BDIAEditPipeline.

Modelled on the properties diffusers' own scheduler tests check (SchedulerCommonTest, the DDIM and DDIM
inverse tests): DDIM's config keys, attributes and positional step signature, add_noise, custom and
mid-grid timesteps, per-sample timesteps, save/load; plus what is BDIA's own: gamma = 0 is DDIM, and
round trips stay exact under clipping, thresholding, v-prediction and zero-terminal-SNR betas.
"""

import dataclasses
import inspect

import numpy as np
import pytest
import torch

import bdia

pytest.importorskip("diffusers")
from diffusers import (DDIMInverseScheduler, DDIMScheduler, DDPMScheduler,  # noqa: E402
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)

from bdia.diffusers import (BDIAEditPipeline, BDIAInverseScheduler, BDIAScheduler,  # noqa: E402
                            encode_image, network_copy, schedule_from_scheduler)
from bdia.experiments import relative_error  # noqa: E402

BASE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True)


def dummy_model(sample, t):
    """A smooth, timestep-dependent stand-in for a network (as diffusers' scheduler tests use)."""
    t = float(t)
    return torch.tanh(sample) * (t / (t + 1)) + 0.05 * sample


def sample_deter(dtype=torch.float64):
    n = 4 * 3 * 8 * 8
    return (torch.arange(n, dtype=dtype).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2).contiguous()


def full_loop(scheduler, sample, steps=10, timesteps=None):
    if timesteps is None:
        scheduler.set_timesteps(steps)
    else:
        scheduler.set_timesteps(timesteps=timesteps)
    for t in scheduler.timesteps:
        sample = scheduler.step(dummy_model(sample, t), t, sample, 0.0).prev_sample
    return sample


# -- 4. gamma = 0 is DDIM ----------------------------------------------------------------------------
CONFIGS = [
    {},
    {"clip_sample": False},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample"},
    {"thresholding": True, "sample_max_value": 0.5},
    {"thresholding": True, "prediction_type": "v_prediction", "sample_max_value": 2.0},
    {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
    {"trained_betas": np.linspace(1e-4, 0.02, 1000).tolist()},
    {"steps_offset": 1, "set_alpha_to_one": False},
    {"timestep_spacing": "trailing"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_gamma_zero_reproduces_ddim(config):
    ours = full_loop(BDIAScheduler(**{**BASE, **config}, gamma=0.0), sample_deter(torch.float32))
    ddim = full_loop(DDIMScheduler(**{**BASE, **config}), sample_deter(torch.float32))
    torch.testing.assert_close(ours, ddim, rtol=1e-4, atol=1e-5)


def test_where_ddim_steps_off_its_grid_bdia_stays_on_it():
    # trailing with 7 steps of 1000: DDIM steps from each t to t - 142, which is not the next grid point
    config = {**BASE, "timestep_spacing": "trailing"}
    ours, ddim = BDIAScheduler(**config, gamma=0.0), DDIMScheduler(**config)
    ours.set_timesteps(7)
    ddim.set_timesteps(7)
    assert torch.equal(ours.timesteps, ddim.timesteps)
    grid = ours.timesteps.tolist()
    assert any(t - 1000 // 7 not in grid + [-1] and t - 1000 // 7 >= 0 for t in grid)
    assert not torch.allclose(full_loop(ours, sample_deter(torch.float32), 7),
                              full_loop(ddim, sample_deter(torch.float32), 7), atol=1e-4)


# -- 3. every config DDIM accepts, and exact round trips under each -----------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_round_trip_through_the_schedulers_is_exact_for_every_config(config):
    cfg = {**BASE, **config}
    inverse, forward = BDIAInverseScheduler(**cfg, gamma=1.0), BDIAScheduler(**cfg, gamma=1.0)
    x0 = sample_deter() * 2 - 1  # beyond the clip range in places: clipping and thresholding are active
    inverse.set_timesteps(10)
    z = x0
    for t in inverse.timesteps:
        z = inverse.step(dummy_model(z, t), t, z).prev_sample
    state = inverse.inversion_state()
    z = forward.resume_from(state)
    forward.set_timesteps(10)
    for t in forward.timesteps:
        z = forward.step(dummy_model(z, t), t, z).prev_sample
    assert relative_error(z, x0) < 1e-12


def test_invalid_betas_are_refused_clearly():
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\]"):
        BDIAScheduler(beta_start=0.1, beta_end=2.0)
    with pytest.raises(ValueError, match="beta_schedule 'cosine' is not supported"):
        BDIAScheduler(beta_schedule="cosine")
    with pytest.raises(ValueError, match="need 1000 betas"):
        BDIAScheduler(trained_betas=[0.1] * 10)


# -- 2. DDIM's attributes, signature, add_noise ---------------------------------------------------------
def test_the_attributes_and_signature_of_ddim():
    ours, ddim = BDIAScheduler(**BASE), DDIMScheduler(**BASE)
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        torch.testing.assert_close(getattr(ours, name), getattr(ddim, name), rtol=1e-5, atol=1e-6)
    assert ours.order == ddim.order == 1 and ours.init_noise_sigma == ddim.init_noise_sigma == 1.0
    assert set(ours.compatibles) >= set(ddim.compatibles) - {BDIAScheduler}
    step_params = list(inspect.signature(BDIAScheduler.step).parameters)
    assert step_params == list(inspect.signature(DDIMScheduler.step).parameters)
    ours.set_timesteps(10)
    sample = sample_deter()
    out = ours.step(0.1 * sample, ours.timesteps[0], sample, 0.0)  # DDIM's positional eta: an output, not a tuple
    assert out.prev_sample.shape == sample.shape and out.pred_original_sample.shape == sample.shape
    with pytest.raises(ValueError, match="eta must be 0 .* cannot be inverted"):
        ours.step(0.1 * sample, ours.timesteps[1], sample, 1.0)
    prev, x0 = ours.step(0.1 * sample, ours.timesteps[1], sample, 0.0, False, torch.Generator(), None, False)
    assert prev.shape == x0.shape == sample.shape
    assert torch.equal(ours.scale_model_input(sample, 5), sample)


def test_add_noise_equals_ddims_for_per_sample_timesteps():
    ours, ddim = BDIAScheduler(**BASE), DDIMScheduler(**BASE)
    x, noise = sample_deter(torch.float32), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 250, 500, 999])
    torch.testing.assert_close(ours.add_noise(x, noise, t), ddim.add_noise(x, noise, t), rtol=1e-5, atol=1e-6)


def test_from_config_of_ddpm_and_save_load(tmp_path):
    ddpm = DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="v_prediction")
    ours = BDIAScheduler.from_config(ddpm.config, gamma=0.7)
    assert ours.config.beta_schedule == "squaredcos_cap_v2" and ours.gamma == 0.7
    ours.save_config(tmp_path)
    loaded = BDIAScheduler.from_pretrained(tmp_path)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(ours.config)
    torch.testing.assert_close(full_loop(loaded, sample_deter()), full_loop(ours, sample_deter()))


# -- 1. timesteps: any timestep of the grid, mid-grid starts, custom grids, per-sample ---------------------
def test_a_run_that_starts_mid_grid_takes_a_ddim_step_then_bdia():
    ours, ddim = BDIAScheduler(**BASE, gamma=0.5), DDIMScheduler(**BASE)
    ours.set_timesteps(10)
    ddim.set_timesteps(10)
    start = 4
    ours.set_begin_index(start)
    assert ours.begin_index == start and ours.step_index is None
    z = sample_deter()
    t0, t1 = ours.timesteps[start], ours.timesteps[start + 1]
    first = ours.step(dummy_model(z, t0), t0, z).prev_sample
    torch.testing.assert_close(first, ddim.step(dummy_model(z, t0), t0, z).prev_sample)  # the seed: DDIM
    assert ours.step_index == 1
    second = ours.step(dummy_model(first, t1), t1, first).prev_sample
    # the BDIA update (eq. 29) with z from the first step as z_{i+1}, from bdia.steps
    schedule = schedule_from_scheduler(ours)
    lv = [schedule.level(float(t)) for t in (t0, t1, ours.timesteps[start + 2])]
    x0, eps = bdia.PredictionConfig.from_scheduler_config(ours.config).convert(dummy_model(first, t1), first, lv[1])
    torch.testing.assert_close(second, bdia.steps.bdia_from_prediction(z, x0, eps, lv[0], lv[2], 0.5))
    assert not torch.allclose(second, ddim.step(dummy_model(first, t1), t1, first).prev_sample)


def test_any_timestep_of_the_grid_and_off_grid_timesteps():
    ours, ddim = BDIAScheduler(**BASE, gamma=1.0), DDIMScheduler(**BASE)
    ours.set_timesteps(50)
    ddim.set_timesteps(50)
    z = sample_deter()
    for t in (1, 10, 49, 980):  # off the grid (DDIM's own step) and on it (a seed step after a jump)
        torch.testing.assert_close(ours.step(0.1 * z, t, z).prev_sample, ddim.step(0.1 * z, t, z).prev_sample)


def test_per_sample_timestep_tensors():
    ours, ddim = BDIAScheduler(**BASE), DDIMScheduler(**BASE)
    ours.set_timesteps(10)
    ddim.set_timesteps(10)
    z = sample_deter()
    t = ours.timesteps[3]
    same = ours.step(0.1 * z, torch.full((4,), int(t)), z).prev_sample
    torch.testing.assert_close(same, ddim.step(0.1 * z, int(t), z).prev_sample)
    mixed = torch.tensor([901, 501, 101, 1])
    ours.set_timesteps(10)
    out = ours.step(0.1 * z, mixed, z).prev_sample
    for b, tb in enumerate(mixed.tolist()):
        torch.testing.assert_close(out[b:b + 1], ddim.step(0.1 * z[b:b + 1], tb, z[b:b + 1]).prev_sample)


def test_custom_timesteps():
    ours = BDIAScheduler(**BASE)
    ours.set_timesteps(timesteps=[900, 700, 350, 100, 20])
    assert ours.timesteps.tolist() == [900, 700, 350, 100, 20] and ours.num_inference_steps == 5
    # and the round trip on that grid is exact
    inverse, forward = BDIAInverseScheduler(**{**BASE, "clip_sample": False}), BDIAScheduler(**{**BASE, "clip_sample": False})
    inverse.set_timesteps(timesteps=[900, 700, 350, 100, 20])
    x0 = sample_deter()
    z = x0
    for t in inverse.timesteps:
        z = inverse.step(dummy_model(z, t), t, z).prev_sample
    z = forward.resume_from(inverse.inversion_state())
    forward.set_timesteps(timesteps=[900, 700, 350, 100, 20])
    for t in forward.timesteps:
        z = forward.step(dummy_model(z, t), t, z).prev_sample
    assert relative_error(z, x0) < 1e-12
    with pytest.raises(ValueError, match="strictly descending integers"):
        ours.set_timesteps(timesteps=[100, 200])
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps"):
        ours.set_timesteps(0)


def test_inverse_scheduler_meets_ddim_inverse_on_its_first_step():
    config = {**BASE, "clip_sample": False, "steps_offset": 1}
    ours, theirs = BDIAInverseScheduler(**config), DDIMInverseScheduler(**config)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    t = int(theirs.timesteps[0])
    assert int(ours.timesteps[0]) == t
    z = sample_deter(torch.float32)  # DDIMInverseScheduler's coefficients are float32
    torch.testing.assert_close(ours.step(dummy_model(z, t), t, z).prev_sample,
                               theirs.step(dummy_model(z, t), t, z).prev_sample, rtol=1e-5, atol=1e-6)


def test_inverse_scheduler_warns_like_invert():
    with pytest.warns(bdia.ExactnessWarning, match=r"\(1/gamma\)\^\(N-1\)"):
        BDIAInverseScheduler(gamma=0.5).set_timesteps(50)
    inverse = BDIAInverseScheduler()
    inverse.set_timesteps(5)
    z = sample_deter(torch.float16)
    with pytest.warns(bdia.ExactnessWarning, match="float16 is not exact"):
        inverse.step(0.1 * z, inverse.timesteps[0], z)


# -- 5. resuming from a state of any dtype -----------------------------------------------------------
def test_resume_from_casts_the_state_for_a_standard_pipeline(pipe, cat):
    edit = BDIAEditPipeline.from_pipe(pipe)
    state = edit.invert(cat, "a cat", 10, guidance_scale=3.0, latent_dtype=torch.float64)
    scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=1.0)
    with pytest.warns(bdia.ExactnessWarning, match="exact only to torch.float32 rounding"):
        latents = scheduler.resume_from(state, dtype=pipe.unet.dtype)
    assert latents.dtype == torch.float32
    standard = StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler}, requires_safety_checker=False)
    standard.set_progress_bar_config(disable=True)
    rec = standard("a cat", num_inference_steps=10, guidance_scale=3.0, latents=latents, output_type="latent").images
    assert relative_error(rec, encode_image(pipe, cat)) < 1e-4
    with pytest.raises(TypeError, match="cannot resume"):
        scheduler.resume_from(state, dtype=torch.int32)


# -- 6 and 7. the pipelines ---------------------------------------------------------------------------
def test_text_to_image_and_img2img_with_the_scheduler(pipe, cat):
    scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=0.0)
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    for cls in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        outputs = []
        for sched in (scheduler, ddim):
            p = cls(**{**pipe.components, "scheduler": sched}, requires_safety_checker=False)
            p.set_progress_bar_config(disable=True)
            kwargs = dict(prompt="a cat", num_inference_steps=10, guidance_scale=3.0, output_type="latent",
                          generator=torch.Generator().manual_seed(0))
            if cls is StableDiffusionImg2ImgPipeline:
                from PIL import Image

                kwargs.update(image=Image.fromarray(cat).resize((32, 32)), strength=0.6)
            outputs.append(p(**kwargs).images)
        torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)  # gamma = 0 is DDIM
    p = StableDiffusionPipeline(**{**pipe.components, "scheduler": BDIAScheduler.from_config(
        pipe.scheduler.config, gamma=0.5)}, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    custom = p("a cat", timesteps=[901, 601, 301, 1], guidance_scale=3.0, output_type="latent").images
    assert custom.shape == (1, 4, 8, 8) and torch.isfinite(custom).all()


def test_edit_pipeline_round_trip_edit_and_outputs(pipe, cat):
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a cat", 10, strength=0.8, guidance_scale=3.0, gamma=0.96)
    assert edit.num_network_calls == 8 and state.conditioning["guidance_scale"] == 3.0
    assert state.conditioning["latent_dtype"] == "torch.float64"
    steps_seen = []
    same = edit(inversion=state, output_type="latent",
                callback_on_step_end=lambda p, i, t, kw: steps_seen.append(i) or kw).images
    assert relative_error(same, encode_image(pipe, cat)) < 1e-10 and edit.num_network_calls == 7
    assert steps_seen == list(range(1, 8))
    other = edit("a tiger", inversion=state, output_type="latent").images
    assert relative_error(other, same) > 1e-3
    for output_type, check in (("pil", lambda im: im[0].size == (32, 32)), ("np", lambda im: im.shape == (1, 32, 32, 3)),
                               ("pt", lambda im: im.shape == (1, 3, 32, 32))):
        assert check(edit("a tiger", inversion=state, output_type=output_type).images), output_type
    out = edit("a tiger", inversion=state, return_dict=False)
    assert isinstance(out, tuple)
    with pytest.raises(ValueError, match="may read the latents, not change them"):
        edit(inversion=state, callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"] + 1})
    # text to image: negative prompt, several images per prompt, reproducible with a generator
    a = edit(["a cat", "a dog"], num_inference_steps=5, num_images_per_prompt=2, negative_prompt="blurry",
             generator=torch.Generator().manual_seed(1), output_type="latent").images
    b = edit(["a cat", "a dog"], num_inference_steps=5, num_images_per_prompt=2, negative_prompt="blurry",
             generator=torch.Generator().manual_seed(1), output_type="latent").images
    assert a.shape[0] == 4 and torch.equal(a, b)


def test_edit_pipeline_warns_on_guidance_mismatch_and_far_from_noise_latents(pipe, cat):
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a cat", 10, guidance_scale=1.0)
    with pytest.warns(bdia.ExactnessWarning, match="inversion was made at guidance 1, this regeneration uses 3"):
        rec = edit(inversion=state, guidance_scale=3.0, output_type="latent").images
    assert relative_error(rec, encode_image(pipe, cat)) > 1e-3
    far = dataclasses.replace(state, noise_stats={**state.noise_stats, "ratio": 8.0})
    with pytest.warns(bdia.ExactnessWarning, match="8 times the noise level"):
        edit("a tiger", inversion=far, output_type="latent")
    with pytest.raises(ValueError, match="step count mismatch"):
        edit(inversion=state, num_inference_steps=20)


def test_edit_pipeline_lattice_round_trip_is_bit_exact_with_a_float16_unet(pipe, cat):
    """Issue: bit-exact inversion through the pipeline: float16 network, float32 latents."""
    half = BDIAEditPipeline(**{**pipe.components, "unet": network_copy(pipe.unet, torch.float16)},
                            requires_safety_checker=False)
    half.set_progress_bar_config(disable=True)
    state = half.invert(cat, "a cat", 10, guidance_scale=3.0, lattice=True, latent_dtype=torch.float32)
    assert state.options["lattice"] == 2.0**-19
    rec = half(inversion=state, output_type="latent").images
    assert torch.equal(rec, bdia.steps.lattice_round(encode_image(pipe, cat, dtype=torch.float32), 2.0**-19))


def test_scheduler_lattice_round_trip_is_bit_exact():
    config = {**BASE, "clip_sample": False}
    inverse, forward = BDIAInverseScheduler(**config, lattice=True), BDIAScheduler(**config, lattice=True)
    x0 = bdia.steps.lattice_round(sample_deter(torch.float32) * 2 - 1, 2.0**-19)

    def net16(z, t):  # a half-precision network
        return dummy_model(z.half(), t).float()

    inverse.set_timesteps(20)
    z = x0
    for t in inverse.timesteps:
        z = inverse.step(net16(z, t), t, z).prev_sample
    z = forward.resume_from(inverse.inversion_state())
    forward.set_timesteps(20)
    for t in forward.timesteps:
        z = forward.step(net16(z, t), t, z).prev_sample
    assert torch.equal(z, x0)
    with pytest.raises(ValueError, match="lattice needs gamma = 1"):
        BDIAScheduler(gamma=0.5, lattice=True)


# -- the architecture's second edition: the scheduler calls the core for every number ------------------------------
def test_the_inverse_scheduler_starts_at_any_timestep_as_ddim_inverse_does():
    """diffusers' DDIMInverseScheduler tests call step(t) on a fresh scheduler at t = 1, 10, 49 (off the grid) and
    on the grid; a step that does not continue a previous one is exactly DDIM inversion (eq. 10), and one that
    continues it is the exact inverse update."""
    config = {**BASE, "clip_sample": True}
    z = sample_deter(torch.float32)
    for t in (1, 10, 49, 0, 20, 980):
        ours, theirs = BDIAInverseScheduler(**config), DDIMInverseScheduler(**config)
        ours.set_timesteps(50)
        theirs.set_timesteps(50)
        torch.testing.assert_close(ours.step(0.1 * z, t, z).prev_sample, theirs.step(0.1 * z, t, z).prev_sample,
                                   rtol=1e-5, atol=1e-6)
    # a loop that starts mid-grid: the seed to t_3 (from t_2), then the exact update at t_3 from (z at t_2, z at t_3)
    ours = BDIAInverseScheduler(**config, gamma=0.9)
    ours.set_timesteps(10)
    grid = ours.timesteps.tolist()[1:]  # t_1, ..., t_9
    z2 = sample_deter()
    z3 = ours.step(dummy_model(z2, grid[2]), grid[2], z2).prev_sample
    z4 = ours.step(dummy_model(z3, grid[2]), grid[2], z3).prev_sample
    schedule = ours.schedule
    x0, eps = bdia.PredictionConfig.from_scheduler_config(ours.config).convert(
        dummy_model(z3, grid[2]), z3, schedule.level(grid[2]))
    expected = bdia.steps.bdia_inverse_from_prediction(z2, x0, eps, schedule.level(grid[3]),
                                                       schedule.level(grid[1]), 0.9)
    torch.testing.assert_close(z4, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_the_schedulers_grids_and_lattice_are_the_cores(config):
    cfg = {**BASE, **config}
    ours = BDIAInverseScheduler(**cfg, lattice=True)
    schedule = bdia.VPSchedule.from_diffusers_config(cfg)
    for n in (7, 10, 50):
        ours.set_timesteps(n)
        assert ours.timesteps.tolist()[1:] == schedule.timesteps(n)[1:-1].flip(0).tolist()
        assert ours.timesteps[0] == schedule.timesteps(n)[-2]
    z = sample_deter()
    for t in ours.timesteps:
        z = ours.step(dummy_model(z, t), t, z).prev_sample
    assert ours.inversion_state().options["lattice"] == bdia.default_lattice(torch.float64, schedule, 50)


def test_the_pipeline_clips_as_its_scheduler_config_says_and_stays_exact(pipe, cat):
    clipped = BDIAEditPipeline.from_pipe(pipe)
    # set after construction: StableDiffusionPipeline turns clip_sample off in the scheduler it is given
    clipped.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True, clip_sample_range=0.5)
    assert clipped.scheduler.config.clip_sample and not pipe.scheduler.config.clip_sample
    plain = BDIAEditPipeline.from_pipe(pipe)
    for edit in (clipped, plain):
        edit.set_progress_bar_config(disable=True)
    source = encode_image(pipe, cat)
    for method, options in (("bdia", {"gamma": 0.96}), ("obelm", {})):
        state = clipped.invert(cat, "a cat", 10, guidance_scale=3.0, method=method, **options)
        rec = clipped(inversion=state, output_type="latent").images
        assert relative_error(rec, source) < 1e-10, method
    # EDICT's half-step would transform its state through the clip: refused, not silently inexact
    with pytest.raises(ValueError, match="'edict' cannot use a model whose x0 prediction is clipped"):
        clipped.invert(cat, "a cat", 10, guidance_scale=3.0, method="edict")
    state = clipped.invert(cat, "a cat", 10, guidance_scale=3.0)
    assert not torch.allclose(clipped("a tiger", inversion=state, output_type="latent").images,
                              plain("a tiger", inversion=plain.invert(cat, "a cat", 10, guidance_scale=3.0),
                                    output_type="latent").images)


@pytest.mark.parametrize("num_steps, strength", [(10, 0.75), (50, 0.58), (20, 0.8), (7, 0.5)])
def test_a_strength_means_the_same_grid_as_in_diffusers_img2img(pipe, cat, num_steps, strength):
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.scheduler.set_timesteps(num_steps)
    timesteps, steps = img2img.get_timesteps(num_steps, strength, "cpu")
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a cat", num_steps, strength=strength, method="ddim")
    assert state.num_inverted_steps == steps == int(strength * num_steps)
    assert state.timesteps[:-1].tolist() == timesteps.double().tolist()


def test_from_pipe_keeps_the_dtype_and_prints_no_cast_notice(pipe, capfd):
    half = type(pipe)(**{**pipe.components, "unet": network_copy(pipe.unet, torch.float16)},
                      requires_safety_checker=False)
    capfd.readouterr()
    edit = BDIAEditPipeline.from_pipe(half)
    assert edit.unet.dtype == torch.float16 and edit.unet is half.unet and edit.vae is pipe.vae
    assert "kept in float32" not in "".join(capfd.readouterr())
    with pytest.raises(TypeError, match="unknown argument"):
        BDIAEditPipeline.from_pipe(pipe, colour="red")
