"""The run directory's files."""

from __future__ import annotations

import numpy as np
import pytest

from learner.core import PolicyWeights
from services.config import load_config
from services.rundir import RunDir


def test_metrics_lines_stay_json_when_a_value_is_not_finite(tmp_path):
    run = RunDir.create(tmp_path, "nan")
    run.log({"loss/policy": float("nan"), "policy/grad_norm": float("inf"), "perf/frames": 3})
    run.close()
    assert run.read_metrics() == [{"loss/policy": None, "policy/grad_norm": None, "perf/frames": 3}]


def test_config_and_model_round_trip(tmp_path):
    run = RunDir.create(tmp_path, "rt")
    config = load_config(None, ["learner.lr=1e-3"])
    run.write_config(config)
    weights = PolicyWeights(7, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    run.save_model(weights, frames=100)
    assert run.load_config() == config
    loaded = run.load_model()
    assert loaded.version == 7
    np.testing.assert_array_equal(loaded.params["w"], weights.params["w"])


def test_run_directories_do_not_collide(tmp_path):
    assert RunDir.create(tmp_path, "x").path != RunDir.create(tmp_path, "x").path


def test_a_corrupt_model_is_a_clear_error(tmp_path):
    run = RunDir.create(tmp_path, "bad")
    (run.path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a readable troupe model"):
        run.load_model()
