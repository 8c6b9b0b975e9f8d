"""Edit controls (bdia.diffusers.controls): the source branch is the plain reconstruction, the control acts only on
the target's rows and only for its share of the steps, every invertible method composes with it, and the text
pipelines pass it on (all offline: the digits model and the miniature Stable Diffusion pipelines)."""

import dataclasses

import pytest
import torch

import bdia
from bdia.experiments import relative_error

pytest.importorskip("diffusers")
from bdia.apps import digits  # noqa: E402
from bdia.diffusers import (BDIAEditPipeline, FeatureInjection, PromptToPrompt, StableDiffusionEpsModel,  # noqa: E402
                            UNetEpsModel, load_unet, schedule_from_scheduler, tiny_stable_diffusion_xl)
from bdia.diffusers.controls import token_columns  # noqa: E402
from bdia.samplers import runs_on  # noqa: E402

SOURCE, TARGET, BATCH = 3, 8, 4


@pytest.fixture(scope="module")
def digits_setup():
    unet = load_unet(digits.shipped_model_path())
    images, labels = digits.load_digits_images()
    return unet, images[labels == SOURCE][:BATCH].double()


def digit_model(unet, labels, guidance=3.0):
    return UNetEpsModel(unet, torch.as_tensor(labels), guidance_scale=guidance, null_class=digits.NULL_CLASS)


def branches(unet, guidance=3.0):
    """A model of both branches: the source label's rows, then the target's."""
    return digit_model(unet, [SOURCE] * BATCH + [TARGET] * BATCH, guidance)


VP_METHODS = [m for m in bdia.INVERTIBLE_METHODS if runs_on(m, digit_model(torch.nn.Identity(), [0]),
                                                                  bdia.VPSchedule.ddpm())]


@pytest.mark.parametrize("method", VP_METHODS)
def test_the_source_branch_is_the_reconstruction_for_every_method(digits_setup, method):
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    source = bdia.CountingModel(digit_model(unet, [SOURCE] * BATCH))
    state = bdia.invert(source, x0, schedule, 10, method, strength=0.8)
    source.reset()
    reconstruction = bdia.sample(source, state, schedule, 10, method)
    target = digit_model(unet, [TARGET] * BATCH)
    plain_edit = bdia.sample(target, state, schedule, 10, method)
    if not bdia.REGISTRY[method].edits_alone:
        # Direct Inversion regenerates every row as the source branch; its edit beside that branch is DDIM's
        # (the same inverted latent: DDIM inversion's)
        assert torch.equal(plain_edit, reconstruction) and torch.equal(reconstruction, x0)
        ddim = bdia.invert(source.model, x0, schedule, 10, "ddim", strength=0.8)
        assert torch.equal(ddim.latents[0], state.latents[0])
        plain_edit = bdia.sample(target, ddim, schedule, 10, "ddim")
    model = bdia.CountingModel(branches(unet))
    both = bdia.sample(model, state, schedule, 10, method, control=FeatureInjection())
    assert both.shape == (2 * BATCH, *x0.shape[1:]) and both.dtype == x0.dtype
    # the source rows are never touched: a larger batch is all that differs from the plain reconstruction
    assert relative_error(both[:BATCH], reconstruction) < 1e-6
    # one batched call per step of the plain pass: both branches together, 2N image evaluations
    assert model.calls == source.calls
    # the injected features pull the edit towards its source
    assert relative_error(both[BATCH:], x0) < relative_error(plain_edit, x0)
    # controlling none of the steps is the plain edit (to a larger batch's rounding)
    idle = bdia.sample(branches(unet), state, schedule, 10, method, control=FeatureInjection(features=0.0))
    assert relative_error(idle[BATCH:], plain_edit) < 1e-6


def test_injecting_the_last_decoder_block_everywhere_regenerates_the_source(digits_setup):
    # after up_blocks.1 the digits UNet only normalises and projects, with no condition: the target's output is the
    # source's, so the edit retraces the reconstruction; an independent check of which rows the control writes
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    state = bdia.invert(digit_model(unet, [SOURCE] * BATCH, 7.5), x0, schedule, 10, "bdia", gamma=0.9)
    both = bdia.sample(branches(unet, 7.5), state, schedule, 10, "bdia",
                       control=FeatureInjection(features=1.0, layers="up_blocks.1.resnets.1"))
    assert torch.allclose(both[BATCH:], both[:BATCH], rtol=0, atol=1e-6)
    assert relative_error(both[:BATCH], x0) < 1e-9


@pytest.mark.parametrize("fraction, controlled", [(0.0, 0), (0.25, 2), (0.5, 4), (0.8, 6), (1.0, 8)])
def test_a_fraction_controls_the_first_steps_from_the_noisy_end(digits_setup, fraction, controlled):
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    state = bdia.invert(digit_model(unet, [SOURCE] * BATCH), x0, schedule, 8, "ddim")
    seen = []

    def observe(module, inputs):
        # the decoder's last ResBlock feeds the output norm: were the target's rows the source's? (groups:
        # unconditional then conditional, each the source rows, then the target rows)
        rows = inputs[0].view(2, 2, BATCH, *inputs[0].shape[1:])
        seen.append(bool(torch.equal(rows[:, 0], rows[:, 1])))

    handle = unet.conv_norm_out.register_forward_pre_hook(observe)
    try:
        bdia.sample(branches(unet), state, schedule, 8, "ddim", control=FeatureInjection(features=fraction))
    finally:
        handle.remove()
    assert seen == [True] * controlled + [False] * (8 - controlled)


def test_a_control_is_undone_after_the_run(digits_setup):
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    z, model = x0.float(), digit_model(unet, [SOURCE] * BATCH)
    before = model(z, 500.0)
    state = bdia.invert(model, x0, schedule, 5, "ddim")
    bdia.sample(branches(unet), state, schedule, 5, "ddim", control=FeatureInjection())
    assert torch.equal(model(z, 500.0), before)
    assert not any(m._forward_hooks for m in unet.modules())


def test_controls_refuse_what_they_cannot_control(digits_setup):
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    state = bdia.invert(digit_model(unet, [SOURCE] * BATCH), x0, schedule, 5, "ddim")
    with pytest.raises(ValueError, match="features is the fraction of the steps"):
        FeatureInjection(features=1.5)
    with pytest.raises(ValueError, match="no layer up_blocks.3.resnets.0; its decoder ResBlocks are up_blocks.0"):
        bdia.sample(branches(unet), state, schedule, 5, "ddim", control=FeatureInjection(layers="up_blocks.3.resnets.0"))
    with pytest.raises(ValueError, match="needs the source and target prompts' tokens"):
        bdia.sample(branches(unet), state, schedule, 5, "ddim", control=PromptToPrompt())
    with pytest.raises(ValueError, match="no cross-attention .it is not conditioned on text.; use FeatureInjection"):
        bdia.sample(branches(unet), state, schedule, 5, "ddim", control=PromptToPrompt(tokens=((1, 2, 3), (1, 4, 3))))
    with pytest.raises(ValueError, match="the model sees both branches, 8 rows; condition the source's rows, then"):
        bdia.sample(digit_model(unet, [SOURCE] * BATCH), state, schedule, 5, "ddim", control=FeatureInjection())
    with pytest.raises(TypeError, match="controls a diffusers network"):
        bdia.sample(lambda z, t: torch.zeros_like(z), state, schedule, 5, "ddim", control=FeatureInjection())
    with pytest.raises(TypeError, match="control must be a bdia.diffusers.controls control"):
        bdia.sample(branches(unet), state, schedule, 5, "ddim", control="p2p")


def test_bad_guidance_token_lengths_and_a_cut_trajectory_are_refused(digits_setup):
    from bdia.diffusers import guidance_of

    with pytest.raises(ValueError, match="one finite number per sample"):
        guidance_of([3.0, float("nan")])
    assert guidance_of([3.0, 3.0]) == 3.0 and torch.equal(guidance_of([1.0, 3.0]), torch.tensor([1.0, 3.0],
                                                                                               dtype=torch.float64))
    with pytest.raises(ValueError, match="padded to one length"):
        token_columns([1, 2, 3], [1, 2])
    unet, x0 = digits_setup
    schedule = bdia.VPSchedule.ddpm()
    model = digit_model(unet, [SOURCE] * BATCH)
    state = bdia.invert(model, x0, schedule, 10, "direct-inversion", strength=0.8)
    cut = dataclasses.replace(state, extras={"source_trajectory": state.extras["source_trajectory"][1:]})
    with pytest.raises(ValueError, match="the state holds 7 source states for 8 steps"):
        bdia.sample(model, cut, schedule, 10, "direct-inversion")


def test_token_columns_replace_a_swapped_word_and_refine_an_added_one():
    pad = [49407] * 4
    cat, dog, big_cat = [49406, 320, 2368, 539, 320, 2368, 49407], [49406, 320, 2368, 539, 320, 1929, 49407], \
        [49406, 320, 2368, 539, 320, 1205, 2368, 49407]
    target, source, mode = token_columns(cat + pad + [49407], dog + pad + [49407])
    assert mode == "replace" and target == source == list(range(12))
    target, source, mode = token_columns(cat + pad + [49407], big_cat + pad)
    assert mode == "refine"
    new_word = big_cat.index(1205)
    assert new_word not in target  # the added word keeps its own map
    assert all((cat + pad + [49407])[s] == (big_cat + pad)[t] for t, s in zip(target, source))
    assert target[target.index(new_word + 1)] == new_word + 1 and source[target.index(new_word + 1)] == new_word
    with pytest.raises(ValueError, match="needs prompts of as many tokens"):
        token_columns(cat + pad + [49407], big_cat + pad, mode="replace")
    with pytest.raises(ValueError, match="mode must be 'replace', 'refine' or None"):
        token_columns(cat, dog, mode="reweight")


def test_a_guidance_per_sample_guides_each_branch_at_its_own(pipe):
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    both = StableDiffusionEpsModel(pipe, ["a photo of a cat", "a photo of a dog"], guidance_scale=[3.0, 7.5])(z, 400)
    cat = StableDiffusionEpsModel(pipe, "a photo of a cat", guidance_scale=3.0)(z[:1], 400)
    dog = StableDiffusionEpsModel(pipe, "a photo of a dog", guidance_scale=7.5)(z[1:], 400)
    torch.testing.assert_close(both, torch.cat([cat, dog]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("control", [PromptToPrompt(), PromptToPrompt(mode="refine"), FeatureInjection()])
def test_the_pipeline_edits_with_a_control_beside_the_source(pipe, cat, control):
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a photo of a cat", num_inference_steps=10, strength=0.8, guidance_scale=3.0, gamma=0.9)
    reconstruction = edit(inversion=state, output_type="latent").images
    calls = edit.num_network_calls
    plain = edit("a photo of a dog", inversion=state, output_type="latent", guidance_scale=5.0).images
    # no control is the core's plain edit, bit for bit
    schedule = schedule_from_scheduler(pipe.scheduler)
    core = bdia.sample(StableDiffusionEpsModel(pipe, "a photo of a dog", guidance_scale=5.0), state, schedule, 10,
                       "bdia")
    assert torch.equal(plain, core)
    controlled = edit("a photo of a dog", inversion=state, output_type="latent", guidance_scale=5.0,
                      control=control).images
    assert controlled.shape == plain.shape and edit.num_network_calls == 2 * calls
    # the source branch, at the inversion's guidance, is the reconstruction, and the edit keeps closer to it
    model = StableDiffusionEpsModel(pipe, ["a photo of a cat", "a photo of a dog"], guidance_scale=[3.0, 5.0])
    both = bdia.sample(model, state, schedule, 10, "bdia", control=control.with_prompts(
        pipe.tokenizer, ["a photo of a cat"], ["a photo of a dog"]))
    assert relative_error(both[:1], reconstruction) < 1e-4
    torch.testing.assert_close(both[1:], controlled, rtol=1e-4, atol=1e-5)
    assert relative_error(controlled, reconstruction) < relative_error(plain, reconstruction)
    with pytest.raises(ValueError, match="a control edits an inversion"):
        edit("a photo of a dog", num_inference_steps=5, control=control)


def test_direct_inversion_through_the_pipeline_edits_only_beside_its_source(pipe, cat):
    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a photo of a cat", num_inference_steps=10, strength=0.8, guidance_scale=3.0,
                        method="direct-inversion")
    assert len(state.extras["source_trajectory"]) == 8  # one stored latent per inverted step, the data included
    # the source is pinned to the inverted trajectory, whose last state is the encoded image itself
    torch.testing.assert_close(edit(inversion=state, output_type="latent").images, state.extras["source_trajectory"][-1],
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="regenerates every image as its source: it edits beside the source branch"):
        edit("a photo of a dog", inversion=state, output_type="latent")
    controlled = edit("a photo of a dog", inversion=state, output_type="latent", control=PromptToPrompt()).images
    ddim = edit.invert(cat, "a photo of a cat", num_inference_steps=10, strength=0.8, guidance_scale=3.0,
                       method="ddim")
    plain = edit("a photo of a dog", inversion=ddim, output_type="latent").images
    # the edit beside the pinned source is DDIM's edit under the control: it differs from DDIM's plain edit
    assert torch.equal(ddim.latents[0], state.latents[0]) and relative_error(controlled, plain) > 1e-3


def test_prompt_to_prompt_on_stable_diffusion_xl(cat):
    from bdia.diffusers import BDIAEditXLPipeline

    edit = BDIAEditXLPipeline.from_pipe(tiny_stable_diffusion_xl(seed=0))
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a photo of a cat", num_inference_steps=6, strength=0.8, guidance_scale=3.0)
    reconstruction = edit(inversion=state, output_type="latent").images
    plain = edit("a photo of a dog", inversion=state, output_type="latent").images
    controlled = edit("a photo of a dog", inversion=state, output_type="latent", control=PromptToPrompt()).images
    assert relative_error(controlled, reconstruction) < relative_error(plain, reconstruction)
    with pytest.raises(ValueError, match="one source prompt's tokens onto one target prompt's"):
        PromptToPrompt().with_prompts(edit.tokenizer, ["a cat", "a dog"], ["a tiger", "a tiger"])
