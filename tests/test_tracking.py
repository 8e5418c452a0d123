"""W&B (offline) and MLflow (a local file store) as a run reports to them, read back."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from learner import metrics as M
from learner.config import ConfigError
from services.config import load_config
from services.tracking.trackers import Trackers, check_packages, open_trackers
from tests.wandb_files import finished, history, records

RUN_ID = "cartpole-20261203-120000-abc123"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    # MLflow's file store is in maintenance mode and asks for this opt-in; a server or a
    # database needs more than mlflow-skinny.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file://{tmp_path}/mlruns"


def _config(*overrides: str):
    return load_config("configs/cartpole.yaml", list(overrides))


def _updates(first: int, last: int) -> list[dict]:
    return [
        {
            M.UPDATES: n,
            M.FRAMES: 2048 * n,
            M.LOSS_POLICY: 0.5 / n,
            M.EVAL_RETURN: 100.0 * n if n % 2 == 0 else None,
            M.GRAD_NORM: float("nan"),  # a skipped update's: left out, not logged as NaN
        }
        for n in range(first, last + 1)
    ]


def test_mlflow_gets_params_every_update_and_the_model(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    config = _config(f"logging.mlflow.tracking_uri={mlflow_uri}", "logging.mlflow.experiment=t")
    trackers = open_trackers(config.logging, config.to_dict(), RUN_ID, tmp_path)
    for record in _updates(1, 4):
        trackers.log(record)
    (tmp_path / "model.pt").write_bytes(b"weights")
    trackers.finish("finished", tmp_path / "model.pt")

    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.run_name == RUN_ID and run.info.status == "FINISHED"
    assert run.data.tags["troupe.run_id"] == RUN_ID
    assert run.data.params["learner.lr"] == "0.003"
    assert run.data.params["actors.envs_per_actor"] == "32"
    policy = client.get_metric_history(run.info.run_id, M.LOSS_POLICY)
    assert [(m.step, m.value) for m in policy] == [(2048 * n, 0.5 / n) for n in (1, 2, 3, 4)]
    evals = client.get_metric_history(run.info.run_id, M.EVAL_RETURN)
    assert [(m.step, m.value) for m in evals] == [(4096, 200.0), (8192, 400.0)]
    assert client.get_metric_history(run.info.run_id, M.GRAD_NORM) == []
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.pt"]


def test_a_continued_run_continues_its_mlflow_run(tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    config = _config(f"logging.mlflow.tracking_uri={mlflow_uri}")
    first = open_trackers(config.logging, config.to_dict(), RUN_ID, tmp_path)
    for record in _updates(1, 3):
        first.log(record)
    first.finish("failed", None)
    # Resumed from its checkpoint at update 2, with a longer frame budget (a changed param).
    again = _config(f"logging.mlflow.tracking_uri={mlflow_uri}", "train.total_frames=900000")
    second = open_trackers(again.logging, again.to_dict(), RUN_ID, tmp_path)
    for record in _updates(3, 5):
        second.log(record)
    second.finish("finished", None)

    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("troupe").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.total_frames"] == "500000"  # as the run began
    steps = [m.step for m in client.get_metric_history(run.info.run_id, M.LOSS_POLICY)]
    assert sorted(steps) == [2048 * n for n in (1, 2, 3, 3, 4, 5)]


def test_wandb_offline_gets_the_config_every_update_and_the_model(tmp_path):
    config = _config("logging.wandb.project=troupe-tests", "logging.wandb.mode=offline",
                     "logging.wandb.tags=[ci, cartpole]")  # fmt: skip
    trackers = open_trackers(config.logging, config.to_dict(), RUN_ID, tmp_path)
    for record in _updates(1, 4):
        trackers.log(record)
    (tmp_path / "model.pt").write_bytes(b"weights")
    trackers.finish("finished", tmp_path / "model.pt")

    (file,) = tmp_path.glob(f"wandb/offline-run-*-{RUN_ID}/run-{RUN_ID}.wandb")
    rows = history(finished(file))
    kinds = [r.WhichOneof("record_type") for r in records(file)]
    assert rows, f"no history rows in {file}; its records: {kinds}"
    assert [json.loads(r[M.FRAMES]) for r in rows] == [2048 * n for n in (1, 2, 3, 4)]
    assert [json.loads(r[M.LOSS_POLICY]) for r in rows] == [0.5 / n for n in (1, 2, 3, 4)]
    assert [M.EVAL_RETURN in r for r in rows] == [False, True, False, True]
    assert not any(M.GRAD_NORM in r for r in rows)
    by_kind = {}
    for record in records(file):
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    (run,) = by_kind["run"]
    assert run.run.run_id == RUN_ID and run.run.project == "troupe-tests"
    assert list(run.run.tags) == ["ci", "cartpole"]
    config_items = {u.key: json.loads(u.value_json) for u in run.run.config.update}
    assert config_items["learner"]["lr"] == 0.003
    (artifact,) = by_kind["artifact"]
    assert artifact.artifact.type == "model"
    assert [m.path for m in artifact.artifact.manifest.contents] == ["model.pt"]
    assert by_kind["exit"][0].exit.exit_code == 0


def test_a_tracker_that_fails_mid_run_is_dropped_and_training_goes_on(caplog):
    class Broken:
        name = "MLflow"

        def log(self, record):
            raise ConnectionError("tracking server gone")

        def finish(self, state, model_file):
            raise AssertionError("a dropped tracker is not called again")

    class Fine:
        name = "W&B"

        def __init__(self):
            self.logged = []

        def log(self, record):
            self.logged.append(record)

        def finish(self, state, model_file):
            self.logged.append(state)

    fine = Fine()
    trackers = Trackers([Broken(), fine])
    with caplog.at_level(logging.WARNING):
        for record in _updates(1, 3):
            trackers.log(record)
        trackers.finish("finished", None)
    assert len(fine.logged) == 4 and fine.logged[-1] == "finished"
    assert caplog.text.count("MLflow failed (ConnectionError: tracking server gone)") == 1


def test_a_missing_package_or_a_bad_uri_is_a_config_error_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"logging.wandb needs the wandb package: pip install"):
        check_packages(_config("logging.wandb.project=p").logging)
    check_packages(_config().logging)  # nothing asked, nothing needed
    with pytest.raises(ConfigError, match="logging.mlflow.tracking_uri='ftp://x' is invalid"):
        _config("logging.mlflow.tracking_uri=ftp://x")
    unreachable = _config(f"logging.mlflow.tracking_uri=file://{tmp_path}/no-opt-in")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="logging.mlflow.tracking_uri=.*MLflow did not answer"):
        open_trackers(unreachable.logging, unreachable.to_dict(), RUN_ID, tmp_path)


def test_a_training_run_reports_each_update_and_its_model_to_both(
    ray_cluster, tmp_path, mlflow_uri
):
    from mlflow import MlflowClient

    from services.storage.rundir import RunDir
    from services.training import train
    from tests.test_ray_integration import _small_config

    config = _small_config(
        tmp_path, "logging.wandb.project=t", "logging.wandb.mode=offline",
        f"logging.mlflow.tracking_uri={mlflow_uri}",
    )  # fmt: skip
    run = RunDir.create(tmp_path, config.name)
    train(config, run)
    frames = [x[M.FRAMES] for x in run.read_metrics()]
    assert frames == [64 * n for n in range(1, 11)]

    client = MlflowClient(tracking_uri=mlflow_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("troupe").experiment_id])
    assert found.info.run_name == run.path.name and found.info.status == "FINISHED"
    updates = client.get_metric_history(found.info.run_id, M.UPDATES)
    assert [(m.step, m.value) for m in updates] == [(f, n + 1) for n, f in enumerate(frames)]
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["model.pt"]

    (file,) = run.path.glob("wandb/offline-run-*/run-*.wandb")
    assert [json.loads(r[M.FRAMES]) for r in history(finished(file))] == frames
    kinds = [r.WhichOneof("record_type") for r in records(file)]
    assert "artifact" in kinds
