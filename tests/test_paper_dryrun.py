"""What `make paper-dryrun` produced: the paper profile's code, unchanged, on stand-in weights.

Skipped unless the dry run has been made; `make paper-dryrun` sets BDIA_REQUIRE_DRYRUN=1 so that a missing
output fails. The numbers are meaningless (random weights); what is checked is that everything ran at the
published sizes, is labelled as stand-in work, and that exactness holds on any weights.
"""

import ast
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from bdia.apps.standins import STANDIN_LABEL
from test_book import glued, printed

DRYRUN = Path(__file__).resolve().parent.parent / "_build" / "paper-dryrun"


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("BDIA_REQUIRE_DRYRUN"):
            pytest.fail(f"{path} is missing: the paper dry run did not produce it")
        pytest.skip("the paper dry run has not been made (make paper-dryrun)")
    return path


def notebook(name):
    import nbformat

    nb = nbformat.read(need(DRYRUN / "notebooks" / f"{name}.ipynb"), as_version=4)
    assert nb.metadata["papermill"]["parameters"]["profile"] == "paper"
    assert not any(out.get("output_type") == "error" for c in nb.cells for out in c.get("outputs", []))
    return nb


def test_chapter_4_paper_profile_scores_every_method_on_stand_ins():
    nb = notebook("04_fid")
    g = glued(nb)
    fids = {k: v for k, v in g.items() if k.startswith("ch4_fid_")}
    assert len(fids) == 8 and all(math.isfinite(v) for v in fids.values())
    assert g["ch4_num_samples"] == 16 and g["ch4_weights"] == STANDIN_LABEL
    assert "profile: paper" in printed(nb)


def test_chapter_5_edits_stable_diffusion_at_the_configured_size_and_stays_exact():
    import pandas as pd

    nb = notebook("05_editing")
    g = glued(nb)
    assert g["ch5_sd_image_size"] == 128 and g["ch5_sd_weights"] == STANDIN_LABEL
    photos = pd.DataFrame(g["ch5_photos"]).set_index("method")
    # 4 steps, strength 0.5: 2 inverted; invert + regenerate: BDIA 2 + 1, EDICT 4 + 4, DDIM 2 + 2
    calls = photos["calls per image"]
    assert (calls["bdia (γ=0.96)"], calls["edict"], calls["ddim"]) == (3, 8, 4)
    null_text = [label for label in photos.index if label.startswith("null-text")]
    assert len(null_text) == 1 and photos.loc[null_text[0], "backward passes"] > 0
    for label in ("edict", "bdia (γ=0.96)"):
        # float64 latents with the float32 network: exact to the network's precision on any weights
        assert photos.loc[label, "latent round-trip error"] < 1e-4, label
    assert photos.loc["ddim", "latent round-trip error"] > 1e-4


def test_the_stand_ins_hold_the_files_the_real_repositories_hold():
    from safetensors import safe_open

    root = need(DRYRUN.parent / "standins")

    def snapshot(repo):
        folder = root / f"models--{repo.replace('/', '--')}"
        return folder / "snapshots" / (folder / "refs" / "main").read_text()

    sd = snapshot("stable-diffusion-v1-5/stable-diffusion-v1-5")
    for component, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                            ("text_encoder", "model"), ("safety_checker", "model")):
        for name, dtype in ((f"{stem}.safetensors", "F32"), (f"{stem}.fp16.safetensors", "F16")):
            with safe_open(str(sd / component / name), "pt") as f:
                first = f.get_slice(next(iter(f.keys())))
                assert first.get_dtype() == dtype, (component, name)
    cifar = snapshot("google/ddpm-cifar10-32")
    assert (cifar / "diffusion_pytorch_model.bin").is_file() and not list(cifar.glob("*.safetensors"))
    assert json.loads((cifar / "scheduler_config.json").read_text())["variance_type"] == "fixed_large"


def test_chapter_7_runs_the_paper_code_on_saved_pipelines():
    nb = notebook("07_rectified_flow")
    g = glued(nb)
    assert g["ch7_weights"] == f"{STANDIN_LABEL} / {STANDIN_LABEL}"
    for family in ("SD3", "FLUX"):
        # bfloat16 transformers with float64 latents: exact to the network's precision at worst
        assert g["ch7_pipeline"][family]["bdia (γ=1)"] < 1e-3
        # the photo edits, scored by the stand-in CLIP ViT-L/14 and LPIPS networks the caches hold as published
        edits = pd.DataFrame(g["ch7_photos"][family]).set_index("method")
        assert edits.loc["bdia (γ=1)", "latent round-trip error"] < 1e-3
        assert edits["CLIP score (target)"].between(0, 100).all()
    assert g["ch7_score_weights"] == f"CLIP: {STANDIN_LABEL}; LPIPS: {STANDIN_LABEL}"


def test_make_paper_recorded_its_run_outside_the_committed_results():
    runs = list(need(DRYRUN / "results").iterdir())
    assert len(runs) == 1
    records = {path.stem: json.loads(path.read_text()) for path in runs[0].glob("*.json")}
    assert set(records) == {"04_fid", "05_editing", "07_rectified_flow"}
    for record in records.values():
        assert record["parameters"]["profile"] == "paper" and record["commit"] and record["machine"]["torch"]
    assert ast.literal_eval(records["04_fid"]["glued"]["ch4_weights"]["text"]) == STANDIN_LABEL


def test_the_fid_command_labels_its_scores():
    record = json.loads(need(DRYRUN / "fid" / "results.json").read_text())
    rows = record["results"]
    assert {r["method"] for r in rows} == {"ddim", "bdia:gamma=1.0", "heun"}
    assert all(math.isfinite(r["fid"]) for r in rows)
    # Heun ran on the class-conditional EDM stand-in, with labels; the DDIM family on the DDPM, without
    labels = {r["method"]: r["class_labels"] for r in rows}
    assert labels["heun"].startswith("uniform random one-hot over 10 classes") and labels["ddim"].startswith("none")
    assert {r["weights"] for r in rows} == {STANDIN_LABEL} and {r["detector_weights"] for r in rows} == {STANDIN_LABEL}
    assert record["reference"]["kind"] == "image folder" and record["reference"]["weights"] == STANDIN_LABEL


def test_the_benchmark_ran_the_full_size_stable_diffusion_unet():
    record = json.loads(need(DRYRUN / "bench" / "results.json").read_text())
    rows = record["rows"]
    assert {r["model"] for r in rows} == {"sd-unet"} and {r["weights"] for r in rows} == {STANDIN_LABEL}
    assert all("64x64x4 latent (512x512)" in r["model_description"] for r in rows)
    bdia_row = next(r for r in rows if r["method"] == "bdia:gamma=1.0")
    assert bdia_row["calls"] == 3 and bdia_row["round_trip_error"] < 1e-4


def test_a_chapter_shows_the_newest_recorded_run_with_its_weights():
    from bdia.apps.book.paper_results import paper_status

    root = need(DRYRUN / "results")
    record = json.loads(next(root.glob("*/04_fid.json")).read_text())
    text = paper_status("04_fid", ["ch4_verdict"], "ch4_weights", root=root)
    verdict = record["glued"]["ch4_verdict"]
    assert text.startswith(f"Committed `paper`-profile run of commit {record['commit']} on ")
    assert f"weights: {STANDIN_LABEL}" in text
    assert (verdict.get("markdown") or ast.literal_eval(verdict["text"])) in text


def test_the_newest_of_several_runs_is_shown_and_none_is_said_plainly(tmp_path):
    from bdia.apps.book.paper_results import paper_status

    assert paper_status("04_fid", ["ch4_verdict"], root=tmp_path).startswith("No run of this chapter's `paper`")
    for day, commit, finding in (("2026-01-02", "bbb", "newer"), ("2026-01-01", "aaa", "older")):
        (tmp_path / commit).mkdir()
        (tmp_path / commit / "04_fid.json").write_text(json.dumps(
            {"created": day, "commit": commit, "machine": {"gpu": "a GPU"},
             "glued": {"ch4_verdict": {"markdown": f"the {finding} finding"}}}))
    assert paper_status("04_fid", ["ch4_verdict"], root=tmp_path) == \
        "Committed `paper`-profile run of commit bbb on a GPU (2026-01-02): the newer finding"
