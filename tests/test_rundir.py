"""The run directory's files."""

from __future__ import annotations

import numpy as np
import pytest

from learner import metrics as M
from learner.core import PolicyWeights
from services.config import load_config
from services.storage.rundir import RunDir


def test_each_metrics_line_is_written_through_and_a_resumed_run_appends(tmp_path):
    """A run that dies keeps every update it logged (nothing waits for close), and `--resume`
    carries on in the same file."""
    run = RunDir.create(tmp_path, "live")
    run.log({M.FRAMES: 8, M.LOSS_POLICY: float("nan")})
    assert RunDir(run.path).read_metrics() == [{M.FRAMES: 8, M.LOSS_POLICY: None}]
    run.log({M.FRAMES: 16})
    assert [r[M.FRAMES] for r in RunDir(run.path).read_metrics()] == [8, 16]
    run.close()
    resumed = RunDir(run.path)
    resumed.log({M.FRAMES: 24})
    resumed.close()
    assert [r[M.FRAMES] for r in run.read_metrics()] == [8, 16, 24]


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
