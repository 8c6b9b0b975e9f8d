"""Bit-exact inversion: BDIA with gamma = 1 on a dyadic lattice returns its input with error exactly 0.

The claim is ``torch.equal``, not a tolerance: every state is a multiple of 2^-k, every increment is rounded
onto the lattice before it is added, and sums of such numbers are exact in floating point, so reconstruction
retraces the inversion bit for bit and the network sees the same input bits in both directions, whatever
its own precision.
"""

import pytest
import torch

import bdia
from bdia.steps import lattice_round
from conftest import make_mixture

pytest.importorskip("diffusers")

NETWORK_DTYPES = [torch.float32, torch.bfloat16]  # bfloat16 runs on every CPU


def network_in(dtype, exact_model):
    """An exact model that computes its input and output in ``dtype``, like a network in that precision."""

    def model(z, t):
        return exact_model(z.to(dtype).double(), t).to(dtype).to(z.dtype)

    return model


@pytest.mark.parametrize("latents", [torch.float32, torch.float64])
@pytest.mark.parametrize("network", NETWORK_DTYPES)
def test_mixture_round_trip_is_bit_exact(latents, network, sd_schedule):
    mixture = make_mixture(2, seed=0)
    model = network_in(network, mixture.eps_model(sd_schedule))
    spacing = bdia.default_lattice(latents, sd_schedule, 50)
    x0 = lattice_round(mixture.sample(256, generator=torch.Generator().manual_seed(0)).to(latents), spacing)
    state = bdia.invert(model, x0, sd_schedule, 50, "bdia", lattice=True)
    assert state.options["lattice"] == spacing and state.noise_stats["input_moved"] == 0.0
    assert torch.equal(bdia.sample(model, state, sd_schedule, 50, "bdia"), x0)
    # without the lattice the same round trip is only exact to rounding
    plain = bdia.invert(model, x0, sd_schedule, 50, "bdia")
    assert not torch.equal(bdia.sample(model, plain, sd_schedule, 50, "bdia"), x0)


def test_bdia_edm_on_edm_schedule_is_bit_exact():
    schedule = bdia.EDMSchedule()
    mixture = make_mixture(2, seed=1)
    model = network_in(torch.float32, mixture.eps_model(schedule))
    x0 = lattice_round(mixture.sample(64, generator=torch.Generator().manual_seed(1)), 2.0**-30)
    state = bdia.invert(model, x0, schedule, 10, "bdia-edm", lattice=2.0**-30)
    assert torch.equal(bdia.sample(model, state, schedule, 10, "bdia-edm"), x0)
    with pytest.raises(ValueError, match="needs a schedule with alpha = 1"):
        bdia.invert(model, x0, bdia.VPSchedule.scaled_linear(), 10, "bdia-edm", lattice=True)


def test_the_input_is_rounded_onto_the_lattice_and_reported(sd_schedule):
    mixture = make_mixture(2, seed=0)
    x0 = mixture.sample(16, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    state = bdia.invert(mixture.eps_model(sd_schedule), x0, sd_schedule, 20, "bdia", lattice=True)
    spacing = state.options["lattice"]
    moved = state.noise_stats["input_moved"]
    assert 0 < moved <= spacing / 2
    rec = bdia.sample(mixture.eps_model(sd_schedule), state, sd_schedule, 20, "bdia")
    assert torch.equal(rec, lattice_round(x0, spacing)) and (rec - x0).abs().max() == moved


def test_sampling_accuracy_is_unchanged_by_the_lattice(sd_schedule):
    """Against the exact ODE solution (chapter 3's reference), the lattice changes the error by < 1 %."""
    from bdia.ode import solve_probability_flow

    mixture = make_mixture(2, seed=2)
    model = mixture.eps_model(sd_schedule)
    grid = sd_schedule.timesteps(20)
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    noise = lattice_round(noise, bdia.default_lattice(torch.float64, sd_schedule, 20))  # the same start for both
    reference = solve_probability_flow(model, noise, sd_schedule, float(grid[0]), float(grid[-1]))
    for dtype in (torch.float64, torch.float32):
        plain = bdia.sample(model, noise.to(dtype), sd_schedule, 20, "bdia")
        lattice = bdia.sample(model, noise.to(dtype), sd_schedule, 20, "bdia", lattice=True)
        error_plain = (plain.double() - reference).norm() / reference.norm()
        error_lattice = (lattice.double() - reference).norm() / reference.norm()
        assert abs(error_lattice - error_plain) < 0.01 * error_plain, dtype


@pytest.fixture(scope="module")
def digits_unet():
    from bdia.diffusers import load_unet
    from bdia.apps.digits import shipped_model_path

    return load_unet(shipped_model_path())


@pytest.mark.parametrize("latents", [torch.float32, torch.float64])
@pytest.mark.parametrize("network", NETWORK_DTYPES)
def test_digits_unet_round_trip_is_bit_exact(digits_unet, latents, network):
    from bdia.diffusers import UNetEpsModel, network_copy
    from bdia.apps.digits import NULL_CLASS, load_digits_images

    images, labels = load_digits_images()
    x0 = images[labels == 3][:8].to(latents)  # multiples of 1/8: already on the lattice
    unet = digits_unet if network == torch.float32 else network_copy(digits_unet, network)
    model = UNetEpsModel(unet, torch.full((8,), 3), guidance_scale=3.0, null_class=NULL_CLASS)
    schedule = bdia.VPSchedule.ddpm()
    state = bdia.invert(model, x0, schedule, 20, "bdia", strength=0.8, lattice=True)
    assert torch.equal(bdia.sample(model, state, schedule, 20, "bdia"), x0)


@pytest.mark.parametrize("latents", [torch.float32, torch.float64])
def test_miniature_stable_diffusion_round_trip_is_bit_exact_with_a_bfloat16_unet(latents):
    from bdia.diffusers import (StableDiffusionEpsModel, encode_image, network_copy, schedule_from_scheduler,
                                tiny_stable_diffusion)
    from skimage import data

    pipe = tiny_stable_diffusion(seed=0)
    pipe16 = type(pipe)(**{**pipe.components, "unet": network_copy(pipe.unet, torch.bfloat16)},
                        requires_safety_checker=False)
    schedule = schedule_from_scheduler(pipe.scheduler)
    model = StableDiffusionEpsModel(pipe16, "a photo of a cat", guidance_scale=3.0)
    x0 = lattice_round(encode_image(pipe, data.chelsea(), dtype=latents), bdia.default_lattice(latents, schedule, 10))
    state = bdia.invert(model, x0, schedule, 10, "bdia", lattice=True)
    assert torch.equal(bdia.sample(model, state, schedule, 10, "bdia"), x0)


def test_a_nondeterministic_network_breaks_bit_exactness(sd_schedule):
    """The lattice needs the same output for the same input bits; a network that adds its own noise (as
    nondeterministic GPU kernels do, at the level of their rounding) loses bit-exactness."""
    mixture = make_mixture(2, seed=0)
    exact = mixture.eps_model(sd_schedule)
    gen = torch.Generator().manual_seed(0)

    def jittery(z, t):
        return exact(z, t) + 1e-7 * torch.randn(z.shape, generator=gen, dtype=z.dtype)

    x0 = lattice_round(mixture.sample(64, generator=torch.Generator().manual_seed(0)), 2.0**-40)
    state = bdia.invert(jittery, x0, sd_schedule, 30, "bdia", lattice=2.0**-40)
    rec = bdia.sample(jittery, state, sd_schedule, 30, "bdia")
    assert not torch.equal(rec, x0) and (rec - x0).abs().max() < 1e-4


def test_lattice_refusals(sd_schedule):
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4)
    with pytest.raises(ValueError, match="lattice needs gamma = 1"):
        bdia.invert(model, x0, sd_schedule, 10, "bdia", gamma=0.96, lattice=True)
    for method in ("edict", "obelm"):
        with pytest.raises(TypeError, match="coefficient other than 1"):
            bdia.invert(model, x0, sd_schedule, 10, method, lattice=True)
    with pytest.raises(ValueError, match="power of two"):
        bdia.invert(model, x0, sd_schedule, 10, "bdia", lattice=1e-9)
    with pytest.raises(TypeError, match="lattice must be True"):
        bdia.invert(model, x0, sd_schedule, 10, "bdia", lattice="fine")
    # a state outgrowing the exact range of the lattice stops the run
    with pytest.raises(ValueError, match="beyond the range in which torch.float32 adds multiples of the lattice"):
        bdia.invert(model, (x0 * 1e5).float(), sd_schedule, 10, "bdia", lattice=2.0**-10)
    # reconstruction with a lattice the inversion did not use, or from states moved off it, is refused
    plain = bdia.invert(model, x0, sd_schedule, 10, "bdia")
    with pytest.raises(ValueError, match="option mismatch: the state was inverted with lattice=None"):
        bdia.sample(model, plain, sd_schedule, 10, "bdia", lattice=True)
    import dataclasses

    state = bdia.invert(model, x0, sd_schedule, 10, "bdia", lattice=True)
    nudged = torch.nextafter(state.latents[0], torch.full_like(state.latents[0], 10.0))  # one ulp
    moved = dataclasses.replace(state, latents=(nudged, state.latents[1]))
    with pytest.raises(ValueError, match="not on the lattice"):
        bdia.sample(model, moved, sd_schedule, 10, "bdia")


def test_a_gpu_without_deterministic_kernels_is_warned_about(sd_schedule, monkeypatch):
    model = make_mixture(2).eps_model(sd_schedule)
    x0 = make_mixture(2).sample(4)
    monkeypatch.setattr(bdia.exactness, "nondeterministic_kernels", lambda z: True)
    with pytest.warns(bdia.ExactnessWarning, match="use_deterministic_algorithms"):
        bdia.invert(model, x0, sd_schedule, 5, "bdia", lattice=True)


def test_the_readme_recipe_lattice_true_in_both_calls(sd_schedule, pipe, cat):
    """A requested option and its resolved value compare equal: lattice=True in the reconstruction means the
    spacing the inversion chose for the same dtype."""
    mixture = make_mixture(2)
    model, x0 = mixture.eps_model(sd_schedule), mixture.sample(16)
    state = bdia.invert(model, x0, sd_schedule, 20, "bdia", lattice=True)
    again = bdia.sample(model, state, sd_schedule, 20, "bdia", lattice=True)
    assert torch.equal(again, lattice_round(x0, state.options["lattice"]))
    from bdia.diffusers import BDIAEditPipeline, encode_image

    edit = BDIAEditPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    state = edit.invert(cat, "a cat", 10, guidance_scale=3.0, lattice=True)
    rec = edit(inversion=state, output_type="latent", lattice=True).images
    assert torch.equal(rec, lattice_round(encode_image(pipe, cat), state.options["lattice"]))
