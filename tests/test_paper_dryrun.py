"""What `make paper-dryrun` produced: the paper profile's code, unchanged, on stand-in weights.

Skipped unless the dry run has been made; `make paper-dryrun` sets BDIA_REQUIRE_DRYRUN=1 so that a missing
output fails. The numbers are meaningless (random weights); what is checked is that everything ran at the
published sizes, is labelled as stand-in work, and that exactness holds on any weights.
"""

import json
import math
import os
from pathlib import Path

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
    nb = notebook("05_editing")
    g = glued(nb)
    assert g["ch5_sd_image_size"] == 256 and g["ch5_sd_weights"] == STANDIN_LABEL
    # 4 steps, strength 0.5: 2 inverted; invert + regenerate: BDIA 2 + 1, EDICT 4 + 4, DDIM 2 + 2
    assert (g["ch5_sd_calls_bdia_096"], g["ch5_sd_calls_edict"], g["ch5_sd_calls_ddim"]) == (3, 8, 4)
    for key in ("edict", "bdia_09", "bdia_096", "bdia_1"):
        # float64 latents with the float32 network: exact to the network's precision on any weights
        assert g[f"ch5_sd_{key}_float64_float32"] < 1e-4, key


def test_the_fid_command_labels_its_scores():
    record = json.loads(need(DRYRUN / "fid" / "results.json").read_text())
    rows = record["results"]
    assert {r["method"] for r in rows} == {"ddim", "bdia:gamma=1.0"} and all(math.isfinite(r["fid"]) for r in rows)
    assert {r["weights"] for r in rows} == {STANDIN_LABEL} and {r["detector_weights"] for r in rows} == {STANDIN_LABEL}
    assert record["reference"]["kind"] == "image folder" and record["reference"]["weights"] == STANDIN_LABEL


def test_the_benchmark_ran_the_full_size_stable_diffusion_unet():
    record = json.loads(need(DRYRUN / "bench" / "results.json").read_text())
    rows = record["rows"]
    assert {r["model"] for r in rows} == {"sd-unet"} and {r["weights"] for r in rows} == {STANDIN_LABEL}
    assert all("64x64x4 latent (512x512)" in r["model_description"] for r in rows)
    bdia_row = next(r for r in rows if r["method"] == "bdia:gamma=1.0")
    assert bdia_row["calls"] == 3 and bdia_row["round_trip_error"] < 1e-4
