"""The digits rectified flow (issue 29, item 1): the velocity UNet adapter, the training recipe's path and target,
the shipped weights loaded offline and scored by the shipped classifier."""

import json

import pytest
import torch

import bdia
from bdia.apps import digits
from bdia.apps.fid.features import digit_sample_scores

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def random_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**digits.unet_config()).eval()


def test_the_velocity_model_gives_the_network_t_times_1000_and_declares_a_velocity(random_unet):
    from bdia.diffusers import UNetVelocityModel

    z = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([1, 4, 7])
    model = UNetVelocityModel(random_unet, labels)
    with torch.no_grad():
        expected = random_unet(z.float(), 250.0, class_labels=labels).sample
    out = model(z, 0.25)
    assert out.dtype == torch.float64 and torch.equal(out, expected.double())
    assert model.prediction == bdia.predictions.VELOCITY
    # classifier-free guidance mixes the two velocities as it mixes eps
    guided = UNetVelocityModel(random_unet, labels, guidance_scale=3.0, null_class=digits.NULL_CLASS)
    with torch.no_grad():
        null = random_unet(z.float(), 250.0, class_labels=torch.full_like(labels, digits.NULL_CLASS)).sample
    torch.testing.assert_close(guided(z, 0.25), (null + 3.0 * (expected - null)).double(), rtol=1e-5, atol=1e-5)


def test_bdia_inverts_the_velocity_unet_exactly_on_the_flow_schedule(random_unet):
    from bdia.diffusers import UNetVelocityModel, network_copy

    model = UNetVelocityModel(network_copy(random_unet, torch.float64), torch.tensor([3, 8]))
    x0 = digits.load_digits_images(torch.float64)[0][:2]
    schedule = bdia.FlowMatchSchedule()
    state = bdia.invert(model, x0, schedule, 10, "bdia", gamma=1.0)
    again = bdia.sample(model, state, schedule, 10, "bdia")
    assert ((again - x0).norm() / x0.norm()).item() < 1e-12


def test_the_flow_recipe_trains_on_the_linear_path_toward_eps_minus_x(monkeypatch):
    seen, built = [], []

    class Recorder(torch.nn.Module):  # v = scale * z: the loss's gradient in scale at 0 shows the target
        def __init__(self, **config):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(()))
            built.append(self)

        def forward(self, z, timestep, class_labels=None):
            seen.append((z.detach().clone(), timestep.clone(), class_labels.clone()))
            return type("Out", (), {"sample": z * self.scale})()

    import diffusers

    monkeypatch.setattr(diffusers, "UNet2DModel", Recorder)
    digits.train_flow_model(steps=1, batch_size=64, progress=False)
    z, timestep, labels = seen[0]
    t = timestep / digits.FLOW_TRAIN_TIMESTEPS
    assert ((t >= 0) & (t <= 1)).all() and len(set(t.tolist())) > 32
    # the same draws, redone: z = (1 - t) x + t eps for the sampled digits
    gen = torch.Generator().manual_seed(0)
    images, _ = digits.load_digits_images()
    idx = torch.randint(0, len(images), (64,), generator=gen)
    torch.rand(64, generator=gen)
    t_again = torch.rand(64, generator=gen)
    eps = torch.randn((64, 1, 8, 8), generator=gen)
    assert torch.equal(timestep, t_again * digits.FLOW_TRAIN_TIMESTEPS)
    s = t_again.view(-1, 1, 1, 1)
    torch.testing.assert_close(z, (1 - s) * images[idx] + s * eps)
    # d/dscale mean((scale z - target)^2) at scale = 0 is -2 mean(target z): the target is eps - x
    expected = -2 * ((eps - images[idx]) * z).mean()
    torch.testing.assert_close(built[0].scale.grad, expected, rtol=1e-5, atol=1e-7)
    assert (labels == digits.NULL_CLASS).any() and (labels < digits.NUM_CLASSES).any()


def test_digit_sample_scores_of_real_digits_and_of_noise():
    images, labels = digits.load_digits_images()
    _, test = digits.train_test_split(labels)
    real = digit_sample_scores(images[test], labels[test])
    _, accuracy = digits.load_classifier()
    assert real["read as their label"] == pytest.approx(accuracy, abs=0.01)  # the classifier's own test accuracy
    noise = digit_sample_scores(torch.rand(len(test), 1, 8, 8) * 2 - 1, labels[test])
    assert noise["frechet distance to the digits"] > 20 * real["frechet distance to the digits"]
    assert noise["read as their label"] < 0.3


def test_the_shipped_flow_model_loads_offline_and_its_samples_read_as_their_labels():
    from bdia.diffusers import UNetVelocityModel, load_unet

    folder = digits.shipped_flow_model_path()
    unet = load_unet(folder)
    record = json.loads((folder / "training.json").read_text())
    assert record["command"].startswith("python -m bdia train-digits-flow")
    labels = torch.arange(10).repeat_interleave(20)
    noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(1))
    samples = bdia.sample(UNetVelocityModel(unet, labels), noise, bdia.FlowMatchSchedule(), 20, "ddim")
    scores = digit_sample_scores(samples, labels)
    # a trained flow: most samples are read as the digit asked for (a random network's are read by chance, ~10 %),
    # as the training record found on its own 1000 samples
    assert scores["read as their label"] >= 0.85
    assert scores["read as their label"] == pytest.approx(record["samples"]["read as their label"], abs=0.08)


def test_the_trained_flow_verdict_follows_the_seed_spread():
    import pandas as pd

    from bdia.apps.book import flow

    # per method: the Fréchet distance on three seeds (mean, then +-1): the seed spread is 1 everywhere
    means = {"ddim": 10.0, "bdia (γ=1)": 9.5, "bdia (γ=0.8)": 7.0, "bdia (γ=0.5)": 6.0, "obelm": 13.0,
             "midpoint": 8.1, "fireflow": 10.5}
    rows = [{"method": m, "budget": 10, "seed": k, "frechet distance": mean + d, "read as their label": 0.9}
            for m, mean in means.items() for k, d in enumerate((-1.0, 0.0, 1.0))]
    table = pd.DataFrame(rows)
    summary = flow.trained_flow_summary(table).set_index("method")
    assert summary.loc["bdia (γ=0.8)", "Fréchet distance"] == pytest.approx(7.0)
    assert summary.loc["bdia (γ=0.8)", "seed spread"] == pytest.approx(1.0)
    text = flow.trained_flow_verdict(table)
    # a difference counts beyond twice the spread (2): 0.8 (3 better) and 0.5 (4 better) do, 1 (0.5) does not
    assert text.startswith("At 10 calls Euler reaches a Fréchet distance of 10.00 (seed spread 1.00); BDIA beats "
                           "it by more than twice the seed spread at γ = 0.5 and 0.8.")
    # O-BELM is 3 worse; the midpoint rule (1.9 better) and FireFlow (0.5 worse) stay within twice the spread
    assert text.endswith("The midpoint rule (RF-Solver) and FireFlow do as well, within the noise; O-BELM does "
                         "worse.")
