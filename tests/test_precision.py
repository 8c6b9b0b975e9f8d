"""Exactness when the network runs in lower precision than the latents (float64 latents, float32 network).

The mechanism these tests pin down: a round trip is exact when reconstruction evaluates the network on
the same input *bits* as inversion did. Float64 states that agree only up to float64 rounding can round
to different float32 inputs; then a float32 network may return a different eps (its own rounding), and
the float64 round trip is exact only to float32's precision. Whether a real float32 network's output
changes for a given input change depends on the summation order of the CPU's kernels, so the tests use
a model whose output moves whenever an input bit moves (the worst case), and check the input bits of the
real digits network directly.
"""

import pytest
import torch

import bdia
from bdia.experiments import compare_network_inputs, round_trip
from conftest import make_mixture


def float32_network(exact_model):
    """``exact_model`` behind a float32 'network' whose output changes by a few float32 ulps whenever any bit
    of its float32 input changes, as a real float32 network's output can. Deterministic on every CPU."""

    def model(z, t):
        q = z.to(torch.float32)
        bits = q.view(torch.int32).reshape(q.shape[0], -1).to(torch.int64)
        weights = torch.arange(1, bits.shape[1] + 1, dtype=torch.int64) * 2654435761
        wobble = ((bits * weights).sum(-1) % 17 - 8).to(torch.float64) * 2.0**-23  # up to 8 ulps, one per sample
        eps = exact_model(q.double(), t) * (1 + wobble.view(-1, *[1] * (z.dim() - 1)))
        return eps.to(torch.float32).to(z.dtype)

    return model


@pytest.fixture
def sparse_data():
    """Mixture samples with exact zeros in a quarter of their coordinates, as real images have."""
    x0 = make_mixture(16, seed=3).sample(8, generator=torch.Generator().manual_seed(4))
    x0[:, :4] = 0.0
    return x0


def test_edict_feeds_a_float32_network_other_bits_where_the_data_are_zero(sd_schedule, sparse_data):
    model = float32_network(make_mixture(16, seed=3).eps_model(sd_schedule))
    trip = round_trip(model, sparse_data, sd_schedule, 20, "edict", compare_inputs=torch.float32)
    # EDICT's second half-step evaluates the network on the state it has just computed; on the last step
    # that is the reconstructed data, whose zeros come back as +-1e-16 residuals that float32 keeps
    assert trip.inputs.flips >= 1
    assert all(k == trip.inputs.calls - 1 for k, _, _ in trip.inputs.flipped_calls)
    assert trip.inputs.flips <= int((sparse_data == 0).sum())
    assert trip.inputs.max_ulps > 1.0
    assert trip.error > 1e-12  # no longer exact to float64 rounding ...
    assert trip.error < 1e-5  # ... but to the precision of the float32 network


def test_bdia_feeds_a_float32_network_the_same_bits(sd_schedule, sparse_data):
    model = float32_network(make_mixture(16, seed=3).eps_model(sd_schedule))
    for gamma in (1.0, 0.96):
        trip = round_trip(model, sparse_data, sd_schedule, 20, f"bdia:gamma={gamma}", compare_inputs=torch.float32)
        # BDIA evaluates the network only on the noisy states z_1 .. z_{N-1}, which reconstruction recomputes to
        # float64 rounding of each element: far below the spacing of float32 there
        assert trip.inputs.flips == 0
        assert trip.inputs.max_ulps < 1e-3 and trip.inputs.expected_flips < 0.01
        assert trip.error < 1e-13


def test_with_the_network_in_float64_every_exact_method_is_exact(sd_schedule, sparse_data):
    model = make_mixture(16, seed=3).eps_model(sd_schedule)  # computes in float64: no second rounding
    for spec in ("edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm"):
        assert round_trip(model, sparse_data, sd_schedule, 20, spec).error < 1e-12, spec


def test_compare_network_inputs_counts_flips_in_the_network_dtype():
    base = torch.tensor([[1.0, 0.0, 2.0**-30]], dtype=torch.float64)
    moved = base + torch.tensor([[2.0**-60, 1e-300, 2.0**-60]], dtype=torch.float64)
    same = compare_network_inputs([(5.0, base)], [(5.0, base.clone())])
    assert (same.flips, same.expected_flips, same.max_ulps) == (0, 0.0, 0.0)
    found = compare_network_inputs([(5.0, base)], [(5.0, moved)])
    # in float32: 1e-300 underflows to 0, and 2^-30 (1 + 2^-30) rounds back to 2^-30 (float32 keeps 24 bits)
    assert found.flips == 0 and 0 < found.max_ulps < 1
    # in float64 both differ (1 + 2^-60 is 1 there too)
    assert compare_network_inputs([(5.0, base)], [(5.0, moved)], torch.float64).flips == 2
    tiny = compare_network_inputs([(5.0, base)], [(5.0, base + torch.tensor([[0.0, 1e-20, 0.0]]))])
    assert tiny.flips == 1 and tiny.flipped_calls == ((0, 5.0, 1),)  # near zero, float32 keeps 1e-20
    with pytest.raises(ValueError, match="no inversion call at that timestep"):
        compare_network_inputs([(5.0, base)], [(6.0, base)])


@pytest.fixture(scope="module")
def digits_unet():
    pytest.importorskip("diffusers")
    from bdia.diffusers import load_unet
    from bdia.apps.digits import shipped_model_path

    return load_unet(shipped_model_path())


def test_the_trained_digits_network_sees_the_same_bits_with_bdia_and_not_with_edict(digits_unet):
    from bdia.diffusers import UNetEpsModel
    from bdia.apps.digits import NULL_CLASS, load_digits_images

    images, labels = load_digits_images()
    sources = images[labels == 3][:12].double()
    schedule = bdia.VPSchedule.ddpm()
    model = UNetEpsModel(digits_unet, torch.full((12,), 3), guidance_scale=3.0, null_class=NULL_CLASS)
    edict = round_trip(model, sources, schedule, 20, "edict", strength=0.8, compare_inputs=torch.float32)
    assert edict.inputs.flips >= 1 and [k for k, _, _ in edict.inputs.flipped_calls] == [edict.inputs.calls - 1]
    assert edict.inputs.flips <= int((sources == 0).sum())
    assert edict.error < 1e-5  # the float32 bound; below 1e-10 only where the CPU's kernels absorb the change
    bdia1 = round_trip(model, sources, schedule, 20, "bdia:gamma=1.0", strength=0.8, compare_inputs=torch.float32)
    assert bdia1.inputs.flips == 0 and bdia1.error < 1e-13
    # the same network in float64: the float64 round trip is exact for every exact method
    from bdia.diffusers import network_copy

    model64 = UNetEpsModel(network_copy(digits_unet, torch.float64), torch.full((12,), 3), guidance_scale=3.0,
                           null_class=NULL_CLASS)
    for spec in ("edict", "bdia:gamma=1.0", "obelm"):
        assert round_trip(model64, sources, schedule, 20, spec, strength=0.8).error < 1e-11, spec
