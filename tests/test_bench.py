"""The benchmark: call counts, the results schema, errors at rounding level, and timings that measure what
they say (warm-up, interleaving) checked against a network whose cost is known."""

import json
import math
import time

import pytest

from bdia.apps import bench
from bdia.__main__ import main
from bdia.schedules import VPSchedule

# network calls per round trip (invert + reconstruct), counted from the methods' definitions
EXPECTED_CALLS = {"ddim": (lambda n: n, lambda n: n), "edict": (lambda n: 2 * n, lambda n: 2 * n),
                  "bdia:gamma=1.0": (lambda n: n, lambda n: n - 1), "bdia:gamma=0.96": (lambda n: n, lambda n: n - 1),
                  "obelm": (lambda n: n, lambda n: n - 1), "bdia:gamma=1.0,lattice=True": (lambda n: n, lambda n: n - 1)}


@pytest.fixture(scope="module")
def rows():
    return bench.run_benchmark(models=["gmm2d", "tiny-sd"], dtypes=["float32", "float64"], step_counts=[5, 10],
                               repeats=1, progress=False)


def test_calls_and_schema(rows):
    assert len(rows) == 2 * 2 * 2 * len(bench.DEFAULT_METHODS)
    for r in rows:
        invert, reconstruct = EXPECTED_CALLS[r["method"]]
        assert (r["invert_calls"], r["reconstruct_calls"]) == (invert(r["steps"]), reconstruct(r["steps"]))
        assert set(r) >= {"model", "weights", "dtype", "steps", "method", "seconds_median", "seconds_min",
                          "time_ratio_to_ddim", "time_ratio_to_ddim_min", "sampler_overhead_per_step",
                          "round_trip_error", "state_bytes", "timing_note"}
        assert all(math.isfinite(r[k]) for k in ("round_trip_error", "time_ratio_to_ddim", "sampler_overhead_per_step"))
        assert r["peak_gpu_memory_bytes"] is None
        # one latent for DDIM, two for the exact methods, of the data's size and dtype
        per_latent = {"gmm2d": 256 * 2, "tiny-sd": 4 * 8 * 8}[r["model"]] * (4 if r["dtype"] == "float32" else 8)
        assert r["state_bytes"] == per_latent * (1 if r["method"] == "ddim" else 2)
        assert "single measurement" in r["timing_note"]  # repeats=1
    assert {r["weights"] for r in rows} == {"exact model", "random (miniature pipeline)"}


def test_exact_methods_are_at_rounding_level(rows):
    for r in rows:
        if "lattice" in r["method"]:
            assert r["round_trip_error"] == 0.0, r  # bit-exact, even with the float32 miniature SD UNet
        elif r["method"] == "ddim":
            assert r["round_trip_error"] > 1e-4
        else:
            assert r["round_trip_error"] < (1e-4 if r["dtype"] == "float32" else 1e-11), r


class SleepyModel:
    """A network whose cost is known: ``per_call`` seconds per call, and ``first`` extra on its very first call."""

    def __init__(self, inner, per_call, first=0.0):
        self.inner, self.per_call, self.first, self.calls = inner, per_call, first, 0

    def __call__(self, z, t):
        self.calls += 1
        time.sleep(self.per_call + (self.first if self.calls == 1 else 0.0))
        return self.inner(z, t)


@pytest.fixture
def sleepy(monkeypatch):
    from bdia.toy import two_moons_mixture

    schedule = VPSchedule.scaled_linear()
    mixture = two_moons_mixture()
    model = SleepyModel(mixture.eps_model(schedule), per_call=0.02, first=0.5)  # the sleep dominates the arithmetic
    fake = bench.BenchModel("gmm2d", model, mixture.sample(8), schedule, "sleepy", "exact model")
    monkeypatch.setattr(bench, "build_model", lambda *a, **k: fake)
    return model


def test_time_ratios_follow_the_network_calls_and_the_first_call_is_not_charged(sleepy):
    rows = bench.run_benchmark(models=["gmm2d"], methods=["ddim", "edict", "bdia:gamma=1.0"], dtypes=["float64"],
                               step_counts=[6], repeats=3, progress=False)
    ratio = {r["method"]: r["time_ratio_to_ddim_min"] for r in rows}
    # EDICT makes 24 calls to DDIM's 12, BDIA 11, each sleeping 20 ms; minima are robust to a loaded machine
    assert ratio["edict"] == pytest.approx(2.0, rel=0.25)
    assert ratio["bdia:gamma=1.0"] == pytest.approx(11 / 12, rel=0.25)
    # the 0.5 s first call went to the untimed warm-up, not to DDIM's (or anyone's) timed repeats
    assert all(r["seconds_max"] - r["seconds_min"] < 0.4 for r in rows)
    assert all(r["timing_note"] == "" for r in rows)


def test_check_grid_refuses_before_any_work(tmp_path, sleepy):
    for kwargs, message in [({"methods": ["heun"]}, "has no inverse"), ({"step_counts": [1]}, "at least 2 steps"),
                            ({"dtypes": ["float17"]}, "unknown dtype"), ({"models": ["cifar"]}, "unknown model"),
                            ({"repeats": 0}, "repeats must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            bench.check_grid(**{"models": ["gmm2d"], **kwargs})
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write the results"):
        bench.check_grid(models=["gmm2d"], out=blocker / "sub" / "results.json")
    assert sleepy.calls == 0


def test_command_writes_json_and_csv(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "gmm2d", "--steps", "4", "--repeats", "1", "--dtypes", "float64",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["machine"]["torch"] and len(record["rows"]) == len(bench.DEFAULT_METHODS)
    header = out.with_suffix(".csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["model", "model_description", "weights", "dtype"]
    assert "single measurement" in capsys.readouterr().out
    assert main(["bench", "--models", "cifar", "--out", str(out)]) == 2
    assert "invalid choice: 'cifar'" in capsys.readouterr().err


def test_network_dtype_latent_runs_each_row_in_its_latents_dtype():
    rows = bench.run_benchmark(models=["digits-unet"], methods=["bdia:gamma=1.0"], dtypes=["float32", "float64"],
                               step_counts=[3], repeats=1, network_dtype="latent", progress=False)
    assert {(r["dtype"], r["network_dtype"]) for r in rows} == {("float32", "float32"), ("float64", "float64")}
    float64 = [r for r in rows if r["dtype"] == "float64" and r["method"] != "ddim"]
    assert all(r["round_trip_error"] < 1e-13 for r in float64)
