"""diffusers integration on the miniature Stable Diffusion pipeline and small UNets (all offline)."""

import pytest
import torch

import bdia

pytest.importorskip("diffusers")
from bdia.diffusers import (BDIAEditPipeline, BDIAScheduler, ModelNotAvailableError,  # noqa: E402
                            StableDiffusionEpsModel, UNetEpsModel, encode_image, load_pipeline, load_unet,
                            schedule_from_scheduler, tiny_stable_diffusion)
from bdia.experiments import relative_error  # noqa: E402


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_latent_round_trip_through_stable_diffusion(pipe, cat, guidance, dtype, tol):
    latent = encode_image(pipe, cat, dtype=dtype)
    model = StableDiffusionEpsModel(pipe, "a photo of a cat", guidance_scale=guidance)
    schedule = schedule_from_scheduler(pipe.scheduler)
    errors = {}
    for method, opts in [("bdia", {"gamma": 1.0}), ("bdia", {"gamma": 0.96}), ("edict", {}), ("ddim", {})]:
        state = bdia.invert(model, latent, schedule, 20, method, **opts)
        errors[(method, opts.get("gamma"))] = relative_error(bdia.sample(model, state, schedule, 20, method), latent)
    for key in [("bdia", 1.0), ("bdia", 0.96), ("edict", None)]:
        assert errors[key] < tol, (key, errors[key])
    assert errors[("ddim", None)] > 100 * tol and errors[("ddim", None)] > 1e-4


def edit(pipe, image, source_prompt, target_prompt, **options):
    """Invert under the source prompt, regenerate under the target: (latent, images, invert calls, regenerate calls)."""
    edit_pipe = BDIAEditPipeline.from_pipe(pipe)
    edit_pipe.set_progress_bar_config(disable=True)
    state = edit_pipe.invert(image, source_prompt, **options)
    invert_calls = edit_pipe.num_network_calls
    latent = edit_pipe(target_prompt, inversion=state, output_type="latent").images
    return latent, edit_pipe.decode(latent), invert_calls, edit_pipe.num_network_calls


def test_editing_reconstructs_with_the_source_prompt_and_changes_with_another(pipe, cat):
    options = dict(num_inference_steps=10, strength=0.8, guidance_scale=3.0, gamma=0.96)
    source_latent = encode_image(pipe, cat)
    latent, _, invert_calls, regenerate_calls = edit(pipe, cat, "a cat", "a cat", **options)
    assert relative_error(latent, source_latent) < 1e-10
    assert (invert_calls, regenerate_calls) == (8, 7)
    other, images, _, _ = edit(pipe, cat, "a cat", "a tiger", **options)
    assert relative_error(other, source_latent) > 1e-3
    assert images[0].size == (32, 32)
    # same seeds, same images
    again, _, _, _ = edit(pipe, cat, "a cat", "a tiger", **options)
    assert torch.equal(again, other)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_bdia_scheduler_equals_the_core_sampler(pipe, gamma):
    scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=gamma)
    assert scheduler.config.steps_offset == 1 and scheduler.config.set_alpha_to_one is False
    pipe_bdia = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    pipe_bdia.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = pipe_bdia("a cat", num_inference_steps=10, guidance_scale=3.0, latents=noise, output_type="latent").images
    model = StableDiffusionEpsModel(pipe, "a cat", guidance_scale=3.0)
    core = bdia.sample(model, noise, schedule_from_scheduler(scheduler), 10, "bdia", gamma=gamma)
    torch.testing.assert_close(ours, core, rtol=1e-5, atol=1e-5)
    if gamma == 0.0:  # and BDIA with gamma = 0 is diffusers' own DDIM
        ddim = pipe("a cat", num_inference_steps=10, guidance_scale=3.0, latents=noise, output_type="latent").images
        torch.testing.assert_close(ours, ddim, rtol=1e-5, atol=1e-5)


def test_inverse_scheduler_in_a_custom_loop_equals_the_core_inversion(pipe, cat):
    from bdia.diffusers import BDIAInverseScheduler

    latent = encode_image(pipe, cat, dtype=torch.float64)
    model = StableDiffusionEpsModel(pipe, "a cat", guidance_scale=3.0)
    inverse = BDIAInverseScheduler.from_config(pipe.scheduler.config, gamma=0.96)
    inverse.set_timesteps(10)
    assert len(inverse.timesteps) == 10 and inverse.timesteps[0] == inverse.timesteps[1]
    z = latent
    for t in inverse.timesteps:
        z = inverse.step(model(z, t), t, z).prev_sample
    state = inverse.inversion_state()
    core = bdia.invert(model, latent, schedule_from_scheduler(pipe.scheduler), 10, "bdia", gamma=0.96)
    for a, b in zip(state.latents, core.latents):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    rec = bdia.sample(model, state, schedule_from_scheduler(pipe.scheduler), 10, "bdia")
    assert relative_error(rec, latent) < 1e-10
    with pytest.raises(ValueError, match="inversion needs gamma > 0"):
        BDIAInverseScheduler.from_config(pipe.scheduler.config, gamma=0.0).set_timesteps(10)


def test_bad_inputs(pipe, cat, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="expected an image"):
        encode_image(pipe, {"not": "an image"})
    with pytest.raises(ValueError, match=r"does not match the pipeline's resolution \(32, 32\)"):
        encode_image(pipe, cat, resize=False)
    with pytest.raises(FileNotFoundError, match="no image file"):
        encode_image(pipe, tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        edit(pipe, cat, "a cat", "a dog", num_inference_steps=10, gamma=1.5)
    v_pipe = tiny_stable_diffusion(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="v-prediction model .* allow_v_prediction=True"):
        StableDiffusionEpsModel(v_pipe, "a cat")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not available offline.*'ci' profile"):
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
    with pytest.raises(ModelNotAvailableError, match="google/ddpm-cifar10-32"):
        load_unet("google/ddpm-cifar10-32")


def test_v_prediction_is_converted_exactly_when_allowed():
    v_pipe = tiny_stable_diffusion(prediction_type="v_prediction")
    model = StableDiffusionEpsModel(v_pipe, "a cat", allow_v_prediction=True)
    z = torch.randn(1, 4, 8, 8)
    v = v_pipe.unet(z, 500.0, encoder_hidden_states=model.cond).sample
    lvl = schedule_from_scheduler(v_pipe.scheduler).level(500)
    torch.testing.assert_close(model(z, 500.0), lvl.alpha * v + lvl.sigma * z)


def test_pipelines_and_unets_load_from_local_folders(tmp_path, pipe, cat):
    pipe.save_pretrained(tmp_path / "sd")
    loaded = load_pipeline(tmp_path / "sd")
    # the VAE computes in float32: compare there (another load may sum in another order)
    z = encode_image(pipe, cat, dtype=torch.float32)
    torch.testing.assert_close(encode_image(loaded, cat, dtype=torch.float32), z)
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    tiny = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    tiny.save_pretrained(tmp_path / "unet")  # the class of google/ddpm-cifar10-32
    unet = load_unet(tmp_path / "unet")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(UNetEpsModel(unet)(x, 10.0), tiny(x, 10.0).sample)


def test_unet_eps_model_guidance_and_labels():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=11)
    z = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([1, 2, 3])
    guided = UNetEpsModel(unet, labels, guidance_scale=2.0, null_class=10)(z, 100.0)
    cond = unet(z.float(), 100.0, class_labels=labels).sample
    uncond = unet(z.float(), 100.0, class_labels=torch.full((3,), 10)).sample
    assert guided.dtype == torch.float64
    torch.testing.assert_close(guided.float(), uncond + 2.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs null_class"):
        UNetEpsModel(unet, labels, guidance_scale=2.0)
    with pytest.raises(ValueError, match="2 class labels for a batch of 3"):
        UNetEpsModel(unet, labels[:2])(z, 10.0)
