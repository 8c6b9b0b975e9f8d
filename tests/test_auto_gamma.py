"""``gamma="auto"``: the smallest gamma whose inversion stays exact within a tolerance, chosen before the run from the
inverted steps and the latents' and network's precision, checked against measured round trips on the digits model."""

import math
import warnings

import pytest
import torch

import bdia
from bdia.exactness import DEFAULT_TOLERANCE, FLIP_BUDGET, auto_gamma
from bdia.experiments import round_trip

pytest.importorskip("diffusers")
from bdia.apps import digits  # noqa: E402
from bdia.diffusers import BDIAEditPipeline, UNetEpsModel, load_unet, network_copy  # noqa: E402

F64, F32 = torch.float64, torch.float32


def flip_rate(drift: float, samples: int = 1_000_000) -> float:
    """The mean over standard normal states of ``min(1, drift / spacing)``, the spacing float32's at each state: the
    chance that a float64 drift of ``drift`` makes a float32 network see another input (computed, not modelled)."""
    z = torch.randn(samples, generator=torch.Generator().manual_seed(0)).abs()
    spacing = (torch.nextafter(z, torch.full_like(z, 10.0)) - z).double()
    return float((drift / spacing).clamp(max=1).mean())


def test_the_rule_keeps_its_a_priori_bounds_and_moves_the_way_precision_says():
    unit = torch.finfo(F64).eps
    for steps in (2, 5, 16, 40, 100):
        for network, inputs in ((F64, 1), (F32, 2304), (F32, 16384)):
            gamma = auto_gamma(steps, F64, network, 1e-6, inputs)
            assert 0 < gamma <= 1
            amplification = bdia.rounding_amplification("bdia", steps, gamma=gamma)
            assert steps * unit * amplification <= 1e-6 * (1 + 1e-9)
            if network is F32 and gamma < 1:
                # the expected flips over the inputs the network sees, from float32's actual spacing: within the
                # budget (up to the rule's approximation) and not far below it
                flips = steps * inputs * flip_rate(unit * amplification)
                assert FLIP_BUDGET / 4 < flips < 2 * FLIP_BUDGET, (steps, inputs, gamma, flips)
            elif gamma < 1:  # 0.001 smaller breaks the rounding bound: the smallest such gamma
                tighter = bdia.rounding_amplification("bdia", steps, gamma=gamma - 0.001)
                assert steps * unit * tighter > 1e-6
    # more steps to invert, a coarser network, a larger input or a tighter tolerance: a gamma nearer 1
    assert auto_gamma(16, F64, F64) < auto_gamma(40, F64, F64) < auto_gamma(100, F64, F64)
    assert auto_gamma(40, F64, F64) < auto_gamma(40, F64, F32, num_inputs=64) < auto_gamma(40, F64, F32, num_inputs=4096)
    assert auto_gamma(40, F64, F64, 1e-4) < auto_gamma(40, F64, F64, 1e-8)
    # float32 latents over 40 steps cannot promise 1e-6 at any gamma: the least rounding is at gamma = 1
    assert auto_gamma(40, F32, F32) == 1.0
    assert DEFAULT_TOLERANCE == 1e-6 and auto_gamma(40, F64) == auto_gamma(40, F64, F64, 1e-6)


def test_auto_on_an_exact_model_records_its_choice_and_reconstructs_with_it():
    from conftest import make_mixture

    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(2)
    model, x0 = mixture.eps_model(schedule), mixture.sample(64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the choice keeps within its tolerance: nothing to warn about
        state = bdia.invert(model, x0, schedule, 50, "bdia", gamma="auto")
    gamma = state.options["gamma"]
    assert gamma == auto_gamma(50, F64, None, 1e-6) and gamma < 0.96
    assert state.noise_stats["auto_gamma"] == {"gamma": gamma, "tolerance": 1e-6, "network_dtype": "float64",
                                               "latents_dtype": "float64"}
    assert "tolerance" not in state.options
    for options in ({}, {"gamma": "auto"}, {"gamma": gamma}):
        x = bdia.sample(model, state, schedule, 50, "bdia", **options)
        assert bdia.experiments.relative_error(x, x0) < 1e-6
    with pytest.raises(bdia.UsageError, match="option mismatch"):
        bdia.sample(model, state, schedule, 50, "bdia", gamma=1.0)
    # the spec form of the command line and the chapters
    spec = bdia.MethodSpec.parse("bdia:gamma=auto,tolerance=1e-8")
    assert spec.label == "bdia (γ=auto, tolerance=1e-08)"
    assert round_trip(model, x0, schedule, 50, spec).state.options["gamma"] == auto_gamma(50, F64, None, 1e-8)


def test_the_progress_bar_names_the_gamma_chosen(capsys):
    from conftest import make_mixture

    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(2)
    state = bdia.invert(mixture.eps_model(schedule), mixture.sample(8), schedule, 20, "bdia", gamma="auto",
                        progress=True)
    assert f"bdia γ={state.options['gamma']:g} inversion" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    ({"gamma": "automatic"}, "gamma must be a number in \\[0, 1\\] or 'auto'"),
    ({"gamma": 0.5, "tolerance": 1e-3}, "tolerance=0.001 is the round-trip error that gamma='auto' chooses"),
    ({"gamma": "auto", "tolerance": 2.0}, "tolerance must be a relative round-trip error in \\(0, 1\\)"),
    ({"gamma": "auto", "tolerance": 1e-20}, "below the rounding of torch.float64 latents"),
    ({"gamma": "auto", "lattice": True}, "lattice needs gamma = 1"),
])
def test_bad_auto_options_are_refused_with_what_is_allowed(options, message):
    from conftest import make_mixture

    schedule = bdia.VPSchedule.scaled_linear()
    mixture = make_mixture(2)
    with pytest.raises(bdia.UsageError, match=message):
        bdia.invert(mixture.eps_model(schedule), mixture.sample(4), schedule, 10, "bdia", **options)


def test_sampling_from_noise_has_no_inversion_to_choose_for():
    schedule = bdia.VPSchedule.scaled_linear()
    with pytest.raises(bdia.UsageError, match="sampling from noise needs a number"):
        bdia.sample(lambda z, t: z * 0, torch.randn(2, 2, dtype=F64), schedule, 10, "bdia", gamma="auto")


@pytest.fixture(scope="module")
def digit_pairs():
    from bdia.apps.book.editing import held_out_pairs

    unet = load_unet(digits.shipped_model_path())
    images, sources, _ = held_out_pairs([[3, 8], [1, 7], [5, 6]], 6)
    return unet, images.double(), sources


@pytest.mark.parametrize("num_steps", [20, 50])
def test_auto_meets_its_tolerance_on_the_digits_model_with_a_float32_network(digit_pairs, num_steps):
    """float64 latents, the float32 UNet at guidance 7.5, strength 0.8: the chosen gamma feeds the network the same
    bits both ways (expected flips, measured, within twice the rule's budget), while with a gamma 0.15 smaller the
    measured expected flips exceed the budget."""
    unet, x0, labels = digit_pairs
    model = UNetEpsModel(unet, labels, guidance_scale=7.5, null_class=digits.NULL_CLASS)
    schedule = bdia.VPSchedule.ddpm()
    K = bdia.inverted_steps(0.8, num_steps)
    chosen = round_trip(model, x0, schedule, num_steps, "bdia:gamma=auto", strength=0.8, compare_inputs=F32)
    gamma = chosen.state.options["gamma"]
    assert gamma == auto_gamma(K, F64, F32, 1e-6, x0.numel()) and gamma < 0.9
    assert chosen.error <= 1e-6 and chosen.inputs.expected_flips <= 2 * FLIP_BUDGET
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bdia.ExactnessWarning)
        smaller = round_trip(model, x0, schedule, num_steps, f"bdia:gamma={gamma - 0.15:.3f}", strength=0.8,
                             compare_inputs=F32)
    # the rule is not far on the safe side of where flips begin
    assert smaller.inputs.expected_flips > FLIP_BUDGET


@pytest.mark.parametrize("num_steps", [20, 50])
def test_auto_is_close_to_the_smallest_exact_gamma_with_a_float64_network(digit_pairs, num_steps):
    """With the network in the latents' precision only the amplified rounding counts: the chosen gamma meets the
    tolerance and one 0.1 smaller misses it."""
    unet, x0, labels = digit_pairs
    x0, labels = x0[::3], labels[::3]  # six digits: the amplified rounding does not depend on the batch
    model = UNetEpsModel(network_copy(unet, F64), labels, guidance_scale=7.5, null_class=digits.NULL_CLASS)
    schedule = bdia.VPSchedule.ddpm()
    chosen = round_trip(model, x0, schedule, num_steps, "bdia:gamma=auto", strength=0.8)
    gamma = chosen.state.options["gamma"]
    assert chosen.error <= 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bdia.ExactnessWarning)
        smaller = round_trip(model, x0, schedule, num_steps, f"bdia:gamma={gamma - 0.1:.3f}", strength=0.8)
    assert smaller.error > 1e-6
    assert math.isclose(gamma, auto_gamma(bdia.inverted_steps(0.8, num_steps), F64, F64))


def test_the_edit_pipeline_inverts_with_an_automatic_gamma(pipe, cat):
    edit = BDIAEditPipeline.from_pipe(pipe)
    state = edit.invert(cat, "a cat", num_inference_steps=10, strength=0.8, guidance_scale=3.0, gamma="auto")
    latent_elements = state.z.numel()
    assert state.options["gamma"] == auto_gamma(8, F64, edit.unet.dtype, 1e-6, latent_elements)
    same = edit(inversion=state, output_type="latent").images
    again = edit(inversion=state, output_type="latent", gamma="auto").images
    assert torch.equal(same, again)


def test_an_edit_takes_its_own_guidance_and_a_damped_latent_without_warnings(pipe, cat):
    import dataclasses

    edit = BDIAEditPipeline.from_pipe(pipe)
    state = edit.invert(cat, "a cat", num_inference_steps=6, strength=0.8, guidance_scale=3.0, gamma=0.7)
    with pytest.warns(bdia.ExactnessWarning, match="the inversion was made at guidance 3, this regeneration uses 7.5"):
        edit(inversion=state, guidance_scale=7.5, output_type="latent")
    far = dataclasses.replace(state, noise_stats={**state.noise_stats, "ratio": 100.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the target's guidance is the edit's own; gamma < 1 damps the grown mode as the edit runs
        edit("a dog", inversion=far, guidance_scale=7.5, output_type="latent")
    undamped = dataclasses.replace(far, options={**far.options, "gamma": 1.0})
    with pytest.warns(bdia.ExactnessWarning, match="100 times the noise level"):
        edit("a dog", inversion=undamped, output_type="latent")
