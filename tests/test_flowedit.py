"""FlowEdit (Kulikov et al. 2025) as the registry method 'flowedit': its loop against the published algorithm
written out, against what it must do on a target that is the source translated (the edit is the translation,
exactly, whatever the noise), its source branch, its calls and its errors."""

import math

import pytest
import torch

import bdia
from bdia.toy import GaussianMixture
from conftest import make_mixture


@pytest.fixture(scope="module")
def flow():
    schedule = bdia.FlowMatchSchedule(shift=3.0)
    source = make_mixture(2, seed=3)
    shift = torch.tensor([0.7, -0.4], dtype=torch.float64)
    target = GaussianMixture(source.means + shift, std=source.std)
    return schedule, source, target, shift


def two_branches(source_velocity, target_velocity):
    """A velocity model conditioned on the source for the first half of its batch and on the target for the rest,
    as a two-branch edit asks."""
    def velocity(z, t):
        half = z.shape[0] // 2
        return torch.cat([source_velocity(z[:half], t), target_velocity(z[half:], t)])
    return bdia.from_velocity(velocity)


def test_flowedit_is_the_published_loop(flow):
    schedule, source, target, _ = flow
    vs, vt = source.velocity_model(schedule), target.velocity_model(schedule)
    x_src = source.sample(32, generator=torch.Generator().manual_seed(0))
    state = bdia.invert(vs, x_src, schedule, 12, "flowedit", strength=0.7, seed=5)
    ours = bdia.sample(two_branches(vs, vt), state.tile(2), schedule, 12, "flowedit")
    # Algorithm 1 of the paper, one noise sample per step: z_src from fresh noise, z_tar = z_edit + z_src - x_src,
    # z_edit moved by the difference of the two velocities
    ts = schedule.timesteps(12)[-int(0.7 * 12) - 1:]
    generator, z_edit = torch.Generator().manual_seed(5), x_src.clone()
    for t, t_next in zip(ts[:-1], ts[1:]):
        eps = torch.randn(x_src.shape, generator=generator, dtype=x_src.dtype)
        z_src = (1 - float(t)) * x_src + float(t) * eps
        z_tar = z_edit + z_src - x_src
        z_edit = z_edit + float(t_next - t) * (vt(z_tar, float(t)) - vs(z_src, float(t)))
    torch.testing.assert_close(ours[32:], z_edit, rtol=1e-12, atol=1e-12)
    assert torch.equal(ours[:32], x_src)  # the source branch is the source


@pytest.mark.parametrize("seed", [0, 1])
def test_a_translated_target_moves_the_source_by_the_translation(flow, seed):
    # the target's velocity is the source's translated: v_tar(z, t) = v_src(z - (1 - t) d, t) - d. From t = 1 the edit
    # keeps z_tar - (1 - t) d equal to z_src, so every step's drift is -d and Euler integrates it exactly: the edit is
    # x_src + d, whatever the noise drawn and however poorly the velocity is integrated elsewhere
    schedule, source, target, shift = flow
    assert float(schedule.timesteps(8)[0]) == 1.0
    x_src = source.sample(16, generator=torch.Generator().manual_seed(1))
    state = bdia.invert(source.velocity_model(schedule), x_src, schedule, 8, "flowedit", seed=seed)
    model = two_branches(source.velocity_model(schedule), target.velocity_model(schedule))
    edit = bdia.sample(model, state.tile(2), schedule, 8, "flowedit")[16:]
    torch.testing.assert_close(edit, x_src + shift, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_the_source_as_target_moves_nothing(flow, dtype, tol):
    schedule, source, _, _ = flow
    vs = source.velocity_model(schedule)
    x_src = source.sample(16, generator=torch.Generator().manual_seed(2)).to(dtype)
    state = bdia.invert(vs, x_src, schedule, 10, "flowedit")
    same = bdia.sample(two_branches(vs, vs), state.tile(2), schedule, 10, "flowedit")
    assert ((same[16:] - x_src).norm() / x_src.norm()).item() < tol
    # alone, the one model gives both velocities, at two calls per step: the same edit, as a round trip
    counting = bdia.CountingModel(vs)
    alone = bdia.sample(counting, state, schedule, 10, "flowedit")
    assert ((alone - x_src).norm() / x_src.norm()).item() < tol and counting.calls == 2 * 10


def test_calls_and_errors(flow):
    schedule, source, target, _ = flow
    record = bdia.get_method("flowedit")
    counting = bdia.CountingModel(two_branches(source.velocity_model(schedule), target.velocity_model(schedule)))
    x_src = source.sample(8, generator=torch.Generator().manual_seed(3))
    state = bdia.invert(counting, x_src, schedule, 10, "flowedit", strength=0.6)
    assert counting.calls == 0 == record.network_calls(6, "invert") and state.num_inverted_steps == 6
    bdia.sample(counting, state.tile(2), schedule, 10, "flowedit")
    # one call on the two-branch batch per step: a velocity per branch, the two calls per step the record states
    assert 2 * counting.calls == record.network_calls(6, "sample") == 12
    with pytest.raises(ValueError, match="no sampler from noise"):
        bdia.sample(counting, torch.randn_like(x_src), schedule, 10, "flowedit")
    with pytest.raises(ValueError, match="flowedit"):
        bdia.invert(source.eps_model(bdia.VPSchedule.scaled_linear()), x_src, bdia.VPSchedule.scaled_linear(), 10,
                    "flowedit")


def test_digit_edits_run_flowedit_beside_its_source_branch():
    from bdia.apps import digits
    from bdia.apps.book import editing
    from bdia.diffusers import load_unet

    unet = load_unet(digits.shipped_flow_model_path())
    classifier, _ = digits.load_classifier()
    images, sources, targets = editing.held_out_pairs([(3, 8)], 2)
    table, edited = editing.digit_edits(unet, classifier, images, sources, targets, bdia.FlowMatchSchedule(), 6, 0.5,
                                        [3.0], specs=("flowedit", "ddim"))
    row = table.set_index("method").loc["flowedit"]
    # no inversion: no calls to invert, no round trip; the edit calls the network on both branches at each step
    assert row["invert calls"] == 0 and row["regenerate calls"] == 2 * 3 and math.isnan(row["reconstruction error"])
    assert not torch.equal(edited["flowedit", 3.0], images.float())  # the target's velocity moved it


def test_the_flow_edit_verdict_holds_flowedit_beside_euler_and_rf_inversion():
    import pandas as pd

    from bdia.apps.book import flow_editing as chapter

    def rows(*items):
        return pd.DataFrame([{"method": m, "steps": 20, "guidance": 3.0, "reconstruction error": e,
                              "edit success": s, "feature distance": d, "gamma": g, "p": float("nan")}
                             for m, e, s, d, g in items])

    nan = float("nan")
    front = rows(("bdia (γ=0.6)", 1e-9, 0.8, 17.0, 0.6))
    baselines = rows(("ddim", 0.3, 0.7, 18.0, nan), ("rf-inversion", 0.2, 0.75, 19.5, nan),
                     ("flowedit", nan, 0.9, 16.0, nan))
    text = chapter.flow_edit_verdict(front, baselines)
    assert ("against Euler inversion's 70% at 18.0, RF-Inversion's 75% at 19.5 and FlowEdit's 90% at 16.0; it beats "
            "Euler inversion and RF-Inversion on both axes but not FlowEdit.") in text
    # FlowEdit beats every other point and has no round trip: the front is FlowEdit alone, not exact
    assert text.endswith("On the front: FlowEdit (none exact).")


def test_the_flow_edit_costs_come_from_the_committed_rows():
    from bdia.apps.book import flow_editing as chapter

    def row(label, steps, calls, ratio):
        return {"model": "digits-flow", "label": label, "steps": steps, "calls": calls, "time_ratio_to_ddim": ratio}

    record = {"machine": {"processor": "x86_64", "threads": 2}, "created": "2026-12-07",
              "rows": [row("ddim", 20, 40, 1.0), row("flowedit", 20, 40, 1.5), row("ddim", 50, 100, 1.0),
                       row("rf-inversion", 50, 100, 1.04), row("flowedit", 50, 100, 1.1), row("bdia (γ=1)", 50, 99, 0.97),
                       row("bdia (γ=auto)", 50, 99, 0.99), {**row("ddim", 50, 100, 1.0), "model": "tiny-sd3"}]}
    text = chapter.flow_edit_costs(record)
    # the largest step count of that model only, each ratio as measured
    assert text == ("In the committed `flow-edit` benchmark (x86_64, 2 threads, 2026-12-07), a round trip of 50 steps "
                    "on the digits-flow model costs, relative to Euler inversion's time (100 calls): BDIA 0.97 to 0.99 "
                    "times (99 calls, at each γ it times), RF-Inversion 1.04 times (100 calls) and FlowEdit 1.10 times "
                    "(100 calls). FlowEdit's calls are all in its edit, two per step: it does not invert.")
    assert chapter.flow_edit_costs(None) == "" and chapter.flow_edit_costs({**record, "rows": []}) == ""
