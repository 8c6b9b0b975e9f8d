"""The prepared GPU check (``python -m bdia bench --suite gpu``), run with ``--smoke`` on the CPU: the same code at
tiny sizes, and a results file of the schema chapter 6 reads."""

import json

import pytest

from bdia.__main__ import main

pytest.importorskip("diffusers")
from bdia.apps import gpu  # noqa: E402
from bdia.apps.book import cost  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "smoke.json"
    assert main(["bench", "--suite", "gpu", "--smoke", "--out", str(out), "--note", "smoke test"]) == 0
    return json.loads(out.read_text())


def test_the_smoke_run_writes_a_complete_results_file(smoke):
    gpu.check_gpu_results(smoke)  # raises on a missing key or a wrong type
    assert smoke["smoke"] is True and smoke["suite"] == "gpu" and smoke["note"] == "smoke test"
    grid = gpu.SMOKE()
    methods = {"ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=1.0,lattice=True", "obelm"}
    for setting in grid.settings:
        batch, network, latents = setting
        rows = [r for r in smoke["round_trips"]
                if (r["batch"], r["network_dtype"], r["latent_dtype"]) == (batch, network, latents)]
        assert {r["method"] for r in rows} == methods, setting


def test_the_numbers_mean_what_they_say(smoke):
    for row in smoke["round_trips"] + smoke["flow"]:
        steps = row["steps"]
        expected = {"ddim": 2 * steps, "edict": 4 * steps}.get(row["method"], 2 * steps - 1)
        assert row["calls"] == expected, row["label"]
        assert row["seconds_min"] <= row["seconds_median"] <= row["seconds_max"]
        if row["method"] == "ddim":
            assert row["time_ratio_to_ddim"] == 1.0
        if "lattice" in row["method"]:
            assert row["round_trip_error"] == 0.0
        elif row["method"] != "ddim" and row["latent_dtype"] == "float64" and row["network_dtype"] == "float32":
            assert row["round_trip_error"] < 1e-10, row
    # on a CPU the lattice round trip is bit-exact either way; a GPU is where the two may differ
    assert smoke["lattice_bit_exact"] == {"deterministic": True, "nondeterministic": True}
    for row in smoke["throughput"]:
        assert row["images_per_second"] > 0
        assert row["projected_50k_fid_minutes"] == pytest.approx(50_000 / row["images_per_second"] / 60)


def test_chapter_6_reads_the_results(smoke):
    table = cost.gpu_table(smoke)
    assert len(table) == len(smoke["round_trips"])
    verdict = cost.gpu_verdict(smoke)
    assert "bit-exact with and without deterministic algorithms" in verdict
    assert cost.gpu_verdict(None).startswith("No GPU run is committed")


def test_a_gpu_run_needs_cuda_and_smoke_belongs_to_the_gpu_suite(tmp_path, capsys):
    assert main(["bench", "--suite", "gpu", "--out", str(tmp_path / "x.json")]) == 2
    assert "pass --device cuda, or --smoke" in capsys.readouterr().err
    assert main(["bench", "--smoke", "--out", str(tmp_path / "y.json")]) == 2
    assert "--smoke belongs to --suite gpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the GPU results file is incomplete: smoke: missing"):
        gpu.check_gpu_results({"suite": "gpu"})


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, smoke):
    out = tmp_path / "run.json"
    measured = []
    real_interleaved = gpu._interleaved

    def counted(*args, **kwargs):
        measured.append(args[-1]["model"])
        return real_interleaved(*args, **kwargs)

    def lease_ends(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu, "_interleaved", counted)
    monkeypatch.setattr(gpu, "_throughput", lease_ends)
    with pytest.raises(KeyboardInterrupt):
        gpu.run_gpu_suite(out, smoke=True)
    settings = len(gpu.SMOKE().settings)
    assert not out.exists() and measured == ["sd15-unet"] * settings
    first = json.loads((tmp_path / "run.json.partial").read_text())
    kept = first["parts"]
    assert set(kept) == {f"round trips {b} {n} {l}" for b, n, l in gpu.SMOKE().settings} | {"lattice determinism"}

    monkeypatch.undo()
    monkeypatch.setattr(gpu, "_interleaved", counted)
    assert gpu.run_gpu_suite(out, smoke=True) == 0
    assert measured == ["sd15-unet"] * settings + ["sd35-medium-transformer"]  # only what was left
    record = json.loads(out.read_text())
    gpu.check_gpu_results(record)
    assert [r["label"] for r in record["round_trips"]] == [r["label"] for r in smoke["round_trips"]]
    assert record["seconds"] >= round(first["seconds"], 1) > 0  # the time of both runs' parts
    assert not (tmp_path / "run.json.partial").exists()


@pytest.mark.parametrize("left_behind", [
    json.dumps({"identity": {"grid": "another"}, "parts": {"throughput": "not a measurement"}}),
    '{"identity": {"grid": "cut off mid-wr'])
def test_parts_of_another_grid_or_an_unreadable_file_are_not_reused(tmp_path, capsys, left_behind):
    out = tmp_path / "run.json"
    (tmp_path / "run.json.partial").write_text(left_behind)
    assert gpu.run_gpu_suite(out, smoke=True) == 0
    assert isinstance(json.loads(out.read_text())["throughput"], list)
    assert "resuming" not in capsys.readouterr().out
