"""The run directory's files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from learner import metrics as M
from learner.config import ConfigError
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


def test_a_rewind_drops_what_was_logged_past_the_checkpoint(tmp_path):
    """A run killed 3 updates past its checkpoint (the last line cut mid-write) continues
    from it: its metrics go back to that update, and TensorBoard hides the later steps."""
    from tests.test_plot import events_in

    run = RunDir.create(tmp_path, "killed")
    for updates in range(1, 6):
        run.log({M.UPDATES: updates, M.FRAMES: 8 * updates})
    run.close()
    with open(run.path / "metrics.jsonl", "a") as out:
        out.write('{"updates": 6, "fra')
    again = RunDir(run.path)
    again.rewind(updates=2, frames=16)
    again.log({M.UPDATES: 3, M.FRAMES: 24})
    again.close()
    assert [r[M.UPDATES] for r in again.read_metrics()] == [1, 2, 3]
    events = [e for file in run.path.glob("events.*") for e in events_in(file)]
    purges = [e.step for e in events if e.HasField("session_log")]
    assert purges == [17]  # steps from 17 frames on, before this event, are hidden


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


def test_a_cut_or_emptied_config_yaml_is_an_error_naming_the_file(tmp_path):
    """Never the built-in defaults in place of the run's own config."""
    run = RunDir.create(tmp_path, "cut")
    run.write_config(load_config(None, ["learner.lr=0.01"]))
    assert run.load_config().learner.lr == 0.01
    file = run.path / "config.yaml"
    lines = file.read_text().splitlines(keepends=True)
    file.write_text("".join(lines[: len(lines) // 2]))  # cut at a line: still valid YAML
    with pytest.raises(ConfigError, match=r"config.yaml is incomplete \(cut or emptied\?\)"):
        run.load_config()
    file.write_text("".join(lines)[:-7])  # cut mid-line
    with pytest.raises(ConfigError, match="config.yaml is not valid YAML"):
        run.load_config()
    file.write_text("")
    with pytest.raises(ConfigError, match="it lacks every section"):
        run.load_config()


def test_config_yaml_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """A write that fails halfway (here the sync to disk) leaves the old file and no temp."""
    run = RunDir.create(tmp_path, "atomic")
    run.write_config(load_config(None, ["learner.lr=0.01"]))

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run.write_config(load_config(None, ["learner.lr=0.02"]))
    assert run.load_config().learner.lr == 0.01
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]


def test_a_metrics_write_that_fails_is_logged_and_the_run_goes_on(tmp_path, caplog):
    run = RunDir.create(tmp_path, "full")
    run.log({M.FRAMES: 8})

    def full_disk(record):
        raise OSError(28, "No space left on device")

    run._write = full_disk
    for frames in (16, 24):
        run.log({M.FRAMES: frames})  # no exception
    assert run.lost_lines == 2
    assert caplog.text.count("could not write") == 1  # once, not per update
    assert "training goes on, 1 update line(s) lost so far" in caplog.text
    del run._write
    run.log({M.FRAMES: 32})
    run.close()
    assert [r[M.FRAMES] for r in run.read_metrics()] == [8, 32]
