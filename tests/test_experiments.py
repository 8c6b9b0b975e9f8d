"""Method specifications and the round-trip measurement shared by chapters, benchmark and CLI."""

import numpy as np
import pytest
import torch

import bdia
from bdia.apps.book import label_key
from bdia.experiments import relative_error, round_trip
from bdia.methods import MethodSpec, parse_methods
from conftest import make_mixture


def test_method_specs_parse_label_and_print():
    spec = MethodSpec.parse("bdia:gamma=0.96")
    assert spec == MethodSpec("bdia", {"gamma": 0.96}) and spec.label == "bdia (γ=0.96)"
    assert str(spec) == "bdia:gamma=0.96" and label_key(spec.label) == "bdia_096"
    assert MethodSpec.parse("edict:p=0.9,leapfrog=false").options == {"p": 0.9, "leapfrog": False}
    assert [s.method for s in parse_methods("ddim; heun bdia-edm:gamma=0.1")] == ["ddim", "heun", "bdia-edm"]
    with pytest.raises(ValueError, match="unknown option.*'gama' for 'bdia'|unknown option\\(s\\) gama"):
        MethodSpec.parse("bdia:gama=0.5")
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        MethodSpec.parse("bdia:gamma=3")
    with pytest.raises(ValueError, match="not of the form key=value"):
        MethodSpec.parse("bdia:gamma")
    with pytest.raises(ValueError, match="unknown method 'ddpm'"):
        MethodSpec.parse("ddpm")


def test_round_trip_reports_calls_times_and_error(sd_schedule):
    mixture = make_mixture(2)
    x0 = mixture.sample(16)
    trip = round_trip(mixture.eps_model(sd_schedule), x0, sd_schedule, 10, "bdia:gamma=1.0", strength=0.5)
    assert (trip.invert_calls, trip.reconstruct_calls, trip.calls) == (5, 4, 9)
    assert trip.error < 1e-12 and trip.invert_seconds > 0 and trip.reconstruct_seconds > 0
    x, r = x0.numpy(), trip.reconstruction.numpy()
    assert trip.error == pytest.approx(np.linalg.norm(r - x) / np.linalg.norm(x), rel=1e-9, abs=1e-18)
    assert isinstance(trip.state, bdia.InversionState) and trip.state.num_inverted_steps == 5
    assert relative_error(torch.ones(3), torch.ones(3)) == 0.0
