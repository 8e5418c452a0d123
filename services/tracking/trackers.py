"""Reporting a run to W&B and MLflow from the driver, beside metrics.jsonl and TensorBoard.

A tracker that fails mid-run (its server gone, a full disk) is logged once and dropped: the
run trains on, and metrics.jsonl still holds every update. Failing to start one is an error
before training, naming the `logging.*` field and the fix.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

from learner import metrics as M
from learner.config import ConfigError
from services.tracking.config import LoggingConfig, MlflowConfig, WandbConfig

log = logging.getLogger(__name__)

MLFLOW_FLUSH_S = 5.0
"""MLflow gets each update's metrics in batches at most this often (one request per batch,
not one per metric per update, which would hold the training loop back)."""
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MLFLOW_PARAMS = 100  # and of params
RUN_ID_TAG = "troupe.run_id"


class Tracker(Protocol):
    name: str

    def log(self, record: dict[str, Any]) -> None: ...

    def finish(self, state: str, model_file: Path | None) -> None: ...


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line (None, NaN, flags and lists left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'learner': {'lr': 0.001}} -> {'learner.lr': '0.001'}: the `--set` keys."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class Trackers:
    """Every tracker the config asks for, driven as one."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log(self, record: dict[str, Any]) -> None:
        self._each("log", record)

    def finish(self, state: str, model_file: Path | None) -> None:
        self._each("finish", state, model_file)
        self.trackers = []

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # a tracker's failure never ends the training
                log.warning(
                    "%s failed (%s: %s); the run goes on without it, metrics.jsonl keeps "
                    "every update",
                    tracker.name,
                    type(err).__name__,
                    err,
                )
                self.trackers.remove(tracker)


def open_trackers(config: LoggingConfig, run_config: dict, run_id: str, run_path: Path):
    """Start the trackers `config` names for the run `run_id` (its config as plain data)."""
    trackers: list[Tracker] = []
    try:
        if config.wandb.project is not None:
            trackers.append(WandbTracker(config.wandb, run_config, run_id, run_path))
        if config.mlflow.tracking_uri is not None:
            trackers.append(MlflowTracker(config.mlflow, run_config, run_id))
    except BaseException:
        Trackers(trackers).finish("failed", None)
        raise
    return Trackers(trackers)


def check_packages(config: LoggingConfig) -> None:
    """Before anything starts: each tracker asked for has its package."""
    wanted = [
        ("logging.wandb", "wandb", "wandb", config.wandb.project),
        ("logging.mlflow", "mlflow", "mlflow", config.mlflow.tracking_uri),
    ]
    for field, module, extra, on in wanted:
        if on is None:
            continue
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"{field} needs the {module} package: pip install -e '.[{extra}]' (or remove "
                f"{field} from the config)"
            ) from None


class WandbTracker:
    name = "W&B"

    def __init__(self, cfg: WandbConfig, run_config: dict, run_id: str, run_path: Path) -> None:
        import wandb

        self._wandb = wandb
        try:
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group,
                tags=list(cfg.tags) or None,
                mode=cfg.mode,
                id=run_id,
                name=run_id,
                resume="allow",  # a continued troupe run continues its W&B run
                dir=str(run_path),
                config=run_config,
                settings=wandb.Settings(console="off", quiet=True),
            )
        except Exception as err:
            raise ConfigError(
                f"logging.wandb: W&B did not start ({type(err).__name__}: {err}); set "
                "WANDB_API_KEY in the environment, or logging.wandb.mode: offline"
            ) from err
        # Frames, not W&B's own step counter: a continued run logs from its checkpoint's
        # frames again, which W&B's monotonic step would drop.
        self.run.define_metric(M.FRAMES)
        self.run.define_metric("*", step_metric=M.FRAMES)

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(numbers(record))

    def finish(self, state: str, model_file: Path | None) -> None:
        if model_file is not None and model_file.is_file():
            artifact = self._wandb.Artifact(f"{self.run.id}-model", type="model")
            artifact.add_file(str(model_file))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if state == "finished" else 1)


class MlflowTracker:
    name = "MLflow"

    def __init__(self, cfg: MlflowConfig, run_config: dict, run_id: str) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        try:
            self._client = client = MlflowClient(tracking_uri=cfg.tracking_uri)
            experiment = client.get_experiment_by_name(cfg.experiment)
            experiment_id = (
                experiment.experiment_id if experiment else client.create_experiment(cfg.experiment)
            )
            found = client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", max_results=1
            )
        except Exception as err:
            raise ConfigError(
                f"logging.mlflow.tracking_uri={cfg.tracking_uri!r}: MLflow did not answer "
                f"({type(err).__name__}: {err})"
            ) from err
        if found:  # a continued run: its parameters are logged already and may not change
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=run_id, tags={RUN_ID_TAG: run_id})
            self.run_id = run.info.run_id
            params = [Param(k, v[:6000]) for k, v in sorted(flatten(run_config).items())]
            for i in range(0, len(params), MLFLOW_PARAMS):
                client.log_batch(self.run_id, params=params[i : i + MLFLOW_PARAMS])
        self._pending: list = []
        self._flushed = time.monotonic()

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp, step = int(time.time() * 1000), int(record.get(M.FRAMES, 0))
        self._pending += [Metric(k, v, stamp, step) for k, v in numbers(record).items()]
        if time.monotonic() - self._flushed >= MLFLOW_FLUSH_S:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MLFLOW_BATCH):
            self._client.log_batch(self.run_id, metrics=pending[i : i + MLFLOW_BATCH])
        self._flushed = time.monotonic()

    def finish(self, state: str, model_file: Path | None) -> None:
        try:
            self._flush()
            if model_file is not None and model_file.is_file():
                self._client.log_artifact(self.run_id, str(model_file))
        finally:
            status = "FINISHED" if state == "finished" else "FAILED"
            self._client.set_terminated(self.run_id, status=status)
