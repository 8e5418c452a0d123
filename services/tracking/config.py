"""The `logging:` section of a run config: which experiment trackers a run reports to.

Credentials never go here (they would be written to config.yaml and every checkpoint): W&B
reads WANDB_API_KEY, MLflow its MLFLOW_TRACKING_* variables, from the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from learner.config import check_types, require

MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
_URI = re.compile(r"([a-z][a-z0-9+.-]*):")


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases (`pip install -e '.[wandb]'`): the config as the run's config, every
    update's metrics against perf/frames, the final model as an artifact. The W&B run's id is
    the troupe run id, so a continued run (--resume, --run-id) continues its W&B run."""

    project: str | None = None
    """The W&B project; None: no W&B."""
    entity: str | None = None
    """Team or user; None: the API key's default entity."""
    group: str | None = None
    tags: tuple[str, ...] = ()
    mode: Literal["online", "offline"] = "online"
    """'offline': write under RUN_DIR/wandb only (`wandb sync` uploads it later)."""

    def __post_init__(self) -> None:
        check_types(self, "logging.wandb.")
        for name in ("project", "entity", "group"):
            value = getattr(self, name)
            require(
                value is None or value.strip() != "",
                f"logging.wandb.{name}",
                value,
                "a non-empty name, or null",
            )


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow (`pip install -e '.[mlflow]'`): the flattened config as parameters, every
    update's metrics at step = frames, the final model as an artifact. A continued run finds
    its MLflow run again by the tag troupe.run_id."""

    tracking_uri: str | None = None
    """e.g. http://mlflow.internal:5000 or file:///data/mlruns; None: no MLflow."""
    experiment: str = "troupe"
    """Created when missing."""

    def __post_init__(self) -> None:
        check_types(self, "logging.mlflow.")
        if self.tracking_uri is not None:
            match = _URI.match(self.tracking_uri)
            require(
                match is not None and match.group(1).split("+")[0] in MLFLOW_SCHEMES,
                "logging.mlflow.tracking_uri",
                self.tracking_uri,
                f"a URI with one of the schemes {', '.join(MLFLOW_SCHEMES)} (e.g. "
                "http://mlflow:5000 or file:///data/mlruns)",
            )
        require(
            self.experiment.strip() != "",
            "logging.mlflow.experiment",
            self.experiment,
            "a non-empty experiment name",
        )


@dataclass(frozen=True)
class LoggingConfig:
    """Trackers a run reports to, beside its metrics.jsonl and TensorBoard events."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def __post_init__(self) -> None:
        check_types(self, "logging.")
