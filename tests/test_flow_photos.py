"""Chapter 7's photo edits through SD3 and FLUX: the CLIP score against CLIP's own forward pass, the labels of the
scorer's weights, the edit study's table on the miniature SD3 pipeline (exact round trips, FlowEdit's missing one,
the calls, an edit into the photo's own prompt that keeps the photo) and the verdict on tables built by hand."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bdia.apps.book import flow_photos, photos
from bdia.apps.clip_score import ClipScorer
from bdia.apps.lpips import LPIPS, VGG16_TAPS
from bdia.diffusers import BDIAFlowEditPipeline, FeatureInjection, encode_image, tiny_clip, tiny_stable_diffusion_3


@pytest.fixture(scope="module")
def lpips():
    return LPIPS(weights="random")


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer(*tiny_clip(seed=0), weights="random (miniature CLIP)")


def random_images(count, seed=0, size=(40, 56)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def test_the_clip_score_is_clips_own_cosine(scorer):
    images, prompts = random_images(3), ["a photo of a cat", "a tiger", "a cup of tea"]
    scores = scorer(images, prompts)
    # CLIP's forward pass: logits are the cosines scaled by exp(logit_scale)
    pixels = scorer.image_processor(images=images, return_tensors="pt")["pixel_values"]
    text = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = scorer.model(pixel_values=pixels, **text)
    cosine = (out.logits_per_image / scorer.model.logit_scale.exp()).diagonal().detach()
    np.testing.assert_allclose(scores, 100 * cosine.clamp(min=0).numpy(), rtol=1e-5, atol=1e-5)
    assert np.all((scores >= 0) & (scores <= 100))
    # one at a time scores the same as a batch; one prompt for all is that prompt for each
    np.testing.assert_allclose([scorer([im], [p])[0] for im, p in zip(images, prompts)], scores, rtol=1e-5)
    np.testing.assert_allclose(scorer(images, "a tiger"), scorer(images, ["a tiger"] * 3), rtol=1e-6)


def test_the_clip_score_refuses_a_prompt_count_that_does_not_match(scorer):
    with pytest.raises(ValueError, match="one prompt per image, or one for all: got 2 prompts for 3 images"):
        scorer(random_images(3), ["a", "b"])


def test_a_saved_clip_loads_with_its_weights_label(tmp_path, scorer):
    from bdia.apps import standins

    scorer.model.save_pretrained(tmp_path)
    scorer.tokenizer.save_pretrained(tmp_path)
    scorer.image_processor.save_pretrained(tmp_path)
    loaded = ClipScorer.from_pretrained(str(tmp_path))
    assert loaded.weights == standins.TRAINED_LABEL
    images = random_images(2, seed=1)
    np.testing.assert_allclose(loaded(images, "a tiger"), scorer(images, "a tiger"), rtol=1e-5)
    (tmp_path / standins.MARKER).write_text(json.dumps({"what": "test"}))
    assert ClipScorer.from_pretrained(str(tmp_path)).weights == standins.STANDIN_LABEL


def test_lpips_is_a_weighted_sum_of_cosine_distances_of_vgg_features(lpips):
    images = torch.rand(2, 3, 40, 48) * 2 - 1
    others = torch.rand(2, 3, 40, 48) * 2 - 1
    # VGG-16's features written out layer by layer in torchvision's indices, from the loaded state dict
    state = {k: v for k, v in lpips.features.state_dict().items()}
    x = (images - torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)) / torch.tensor(
        [0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)
    y = (others - torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)) / torch.tensor(
        [0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    pools_after = {2, 7, 14, 21}  # the conv whose ReLU a max-pool follows
    expected = torch.zeros(2)
    for n, index in enumerate(convs):
        x = torch.relu(torch.nn.functional.conv2d(x, state[f"{index}.weight"], state[f"{index}.bias"], padding=1))
        y = torch.relu(torch.nn.functional.conv2d(y, state[f"{index}.weight"], state[f"{index}.bias"], padding=1))
        if index + 1 in VGG16_TAPS:
            # with unit heads, a tap adds the mean over the image of |a/|a| - b/|b||^2 = 2 - 2 cos(a, b)
            cosine = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-30)
            expected += (2 - 2 * cosine).mean(dim=(1, 2))
        if index in pools_after:
            x, y = torch.nn.functional.max_pool2d(x, 2), torch.nn.functional.max_pool2d(y, 2)
    unit = LPIPS(vgg_state={f"features.{k}": v for k, v in state.items()},
                 heads_state={f"lin{k}.model.1.weight": torch.ones_like(h) for k, h in enumerate(lpips.heads)})
    torch.testing.assert_close(unit(images, others), expected, rtol=1e-4, atol=1e-6)
    # a distance: zero to itself, symmetric, positive otherwise
    assert torch.equal(lpips(images, images), torch.zeros(2))
    torch.testing.assert_close(lpips(images, others), lpips(others, images))
    assert (lpips(images, others) > 0).all()


def test_lpips_loads_the_published_layouts_from_the_hub_cache(tmp_path, monkeypatch):
    from bdia.apps import standins

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    paths = standins.write_lpips_standins(tmp_path / "checkpoints", seed=3)
    assert sorted(Path(p).name for p in paths.values()) == ["vgg.pth", "vgg16-397923af.pth"]
    loaded = LPIPS.from_hub()
    assert loaded.weights == standins.STANDIN_LABEL
    again = torch.load(paths[next(iter(paths))], weights_only=True)
    torch.testing.assert_close(loaded.features.state_dict()["0.weight"], again["features.0.weight"])
    images = random_images(2, seed=2)
    assert loaded.distance(images, images).tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def study(scorer, lpips):
    edit = BDIAFlowEditPipeline.from_pipe(tiny_stable_diffusion_3(seed=0))
    pictures = photos.load_photos(["chelsea"])
    table, shown = flow_photos.photo_flow_edits(
        edit, pictures, ["ddim", "flowedit", "bdia:gamma=1.0"], scorer, lpips, 4.0, num_steps=8, strength=0.75,
        control=FeatureInjection(features=0.5), control_specs=["bdia:gamma=1.0"])
    same, _ = flow_photos.photo_flow_edits(  # the photo's own prompt as the target
        edit, pictures, ["bdia:gamma=1.0"], scorer, lpips, 4.0, num_steps=8, strength=0.75,
        prompts={"chelsea": ("a photo of a cat", "a photo of a cat")})
    reference = photos.as_uint8(edit.decode(encode_image(edit.pipe, pictures["chelsea"], dtype=torch.float64)))
    return table.set_index("method"), shown, same.set_index("method"), reference


def test_the_photo_study_measures_round_trips_and_calls(study):
    table, shown, _, _ = study
    assert list(table.index) == [flow_photos.UNEDITED, "ddim", "flowedit", "bdia (γ=1)",
                                 "bdia (γ=1) + feature injection"]
    trips = table["latent round-trip error"]
    assert trips["bdia (γ=1)"] < 1e-10 and trips["ddim"] > 1e-6
    assert np.isnan(trips["flowedit"]) and np.isnan(trips[flow_photos.UNEDITED])  # neither inverts
    steps = int(0.75 * 8)
    calls = table["calls per photo"]
    assert calls["ddim"] == 2 * steps and calls["flowedit"] == 2 * steps  # FlowEdit: two per step, all in the edit
    assert calls["bdia (γ=1)"] == 2 * steps - 1  # one call per step, but one the regeneration takes from the state
    # under the control the same inversion, and each of the edit's calls made for the source branch too
    edit_calls = calls["bdia (γ=1)"] - steps
    assert calls["bdia (γ=1) + feature injection"] == steps + 2 * edit_calls
    assert set(shown) == set(table.index) - {flow_photos.UNEDITED}
    # the control changes the edit, and keeps it closer to its photo
    assert not np.array_equal(shown["bdia (γ=1)"], shown["bdia (γ=1) + feature injection"])


def test_an_exact_edit_into_the_photos_own_prompt_keeps_the_photo(study, scorer):
    table, _, same, reference = study
    # the edit is then the reconstruction: the VAE's reconstruction of the photo to the last 8-bit value or nearly
    assert same.loc["bdia (γ=1)", "PSNR to the source (dB)"] > 50
    assert table.loc["bdia (γ=1)", "PSNR to the source (dB)"] < same.loc["bdia (γ=1)", "PSNR to the source (dB)"]
    # the unedited row is the photo's own score to the target prompt, computed here again
    assert table.loc[flow_photos.UNEDITED, "CLIP score (target)"] == pytest.approx(
        scorer(reference, "a photo of a tiger")[0], rel=1e-6)


def test_the_summary_puts_the_models_side_by_side(study):
    table = study[0].reset_index()
    summary = flow_photos.photo_flow_summary({"SD3": table, "FLUX": table})
    assert list(summary.columns) == ["SD3 CLIP", "SD3 PSNR (dB)", "SD3 LPIPS", "FLUX CLIP", "FLUX PSNR (dB)",
                                     "FLUX LPIPS", "round trip", "calls per photo"]
    assert summary.loc["ddim", "FLUX CLIP"] == table.set_index("method").loc["ddim", "CLIP score (target)"]


def hand_table(rows):
    base = {"method": flow_photos.UNEDITED, "PSNR to the source (dB)": np.inf, "SSIM to the source": 1.0,
            "LPIPS to the source": 0.0,
            "CLIP score (target)": 20.0, "latent round-trip error": np.nan, "calls per photo": 0}
    return pd.DataFrame([base] + [{"method": m, "PSNR to the source (dB)": psnr, "SSIM to the source": 0.5,
                                   "LPIPS to the source": 0.25,
                                   "CLIP score (target)": clip, "latent round-trip error": trip,
                                   "calls per photo": 10} for m, clip, psnr, trip in rows])


def test_the_verdict_holds_the_best_exact_edit_against_each_inexact_one():
    table = hand_table([("bdia (γ=1)", 24.0, 22.0, 1e-12), ("bdia (γ=0.5)", 26.0, 25.0, 1e-9),
                        ("ddim", 25.0, 20.0, 1e-2), ("rf-inversion", 27.0, 26.0, 1e-1),
                        ("flowedit", 28.0, 21.0, np.nan)])
    text = flow_photos.photo_flow_verdict({"SD3": table})
    assert text.startswith("Through SD3, of the exact edits BDIA (γ = 0.5)'s reads most as its prompt: CLIP score "
                           "26.0 (the unedited photos score 20.0) at a PSNR of 25.0 dB to its photo (LPIPS 0.25)")
    assert "it beats Euler inversion on both axes" in text
    assert "RF-Inversion beats it on both" in text
    assert "against FlowEdit it wins on one axis and loses on the other" in text
    inexact = hand_table([("ddim", 25.0, 20.0, 1e-2)])
    assert flow_photos.photo_flow_verdict({"FLUX": inexact}) == \
        "Through FLUX no method edits exactly (round trip within 1e-06)."
