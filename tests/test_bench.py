"""The benchmark's deterministic parts: call counts, the results schema, finite and rounding-level errors."""

import json
import math

import pytest

from bdia import bench
from bdia.__main__ import main

EXPECTED_CALLS = {"ddim": lambda n: 2 * n, "edict": lambda n: 4 * n, "bdia:gamma=1.0": lambda n: 2 * n - 1,
                  "bdia:gamma=0.96": lambda n: 2 * n - 1, "obelm": lambda n: 2 * n - 1}


@pytest.fixture(scope="module")
def rows():
    return bench.run_benchmark(models=["gmm2d", "tiny-sd"], dtypes=["float32", "float64"], step_counts=[5, 10],
                               repeats=1, progress=False)


def test_calls_and_schema(rows):
    assert len(rows) == 2 * 2 * 2 * len(bench.DEFAULT_METHODS)
    for r in rows:
        assert r["calls"] == EXPECTED_CALLS[r["method"]](r["steps"])
        assert r["invert_calls"] + r["reconstruct_calls"] == r["calls"]
        assert set(r) >= {"model", "dtype", "steps", "method", "seconds_median", "seconds_min", "seconds_max",
                          "time_ratio_to_ddim", "sampler_overhead_per_step", "round_trip_error", "state_bytes"}
        assert r["seconds_min"] <= r["seconds_median"] <= r["seconds_max"]
        assert all(math.isfinite(r[k]) for k in ("round_trip_error", "time_ratio_to_ddim", "sampler_overhead_per_step"))
        assert r["state_bytes"] > 0 and r["peak_gpu_memory_bytes"] is None


def test_exact_methods_are_at_rounding_level(rows):
    for r in rows:
        if r["method"] == "ddim":
            assert r["round_trip_error"] > 1e-4
        else:
            assert r["round_trip_error"] < (1e-4 if r["dtype"] == "float32" else 1e-11), r
    ddim = [r for r in rows if r["method"] == "ddim"]
    assert all(r["time_ratio_to_ddim"] == 1.0 for r in ddim)


def test_command_writes_json_and_csv(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "gmm2d", "--steps", "4", "--repeats", "1", "--dtypes", "float64",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["machine"]["torch"] and len(record["rows"]) == 5
    assert out.with_suffix(".csv").read_text().startswith("model,model_description,dtype")
    assert main(["bench", "--models", "cifar", "--out", str(out)]) == 2
    assert "unknown model 'cifar'" in capsys.readouterr().err
