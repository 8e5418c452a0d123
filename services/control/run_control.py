"""A running job's control point: the actor count it should have and its latest metrics.

`RunControl` is plain Python; `services/control/registry.py` hosts it as a named Ray actor, so any
process connected to the cluster can find a run by name, read its metrics and resize it,
while the training loop reads the wanted actor count from it between updates.
"""

from __future__ import annotations

import math
import time
from typing import Any

from actors.config import MAX_ACTORS
from learner import metrics as M

STATES = ("starting", "running", "finished", "failed")

STATUS_METRICS = M.STATUS
"""What a run's status reports, in this order (declared in `learner.metrics.TABLE`)."""


class ScaleError(ValueError):
    """A scale request the run cannot take; the message says what is allowed."""


class RunNotFound(LookupError):
    """No run on the cluster matches; the message lists those that run."""


class RunConflict(RuntimeError):
    """A run with this id is already registered on the cluster."""


def check_actor_count(actors: Any) -> int:
    valid = isinstance(actors, int) and not isinstance(actors, bool) and 1 <= actors <= MAX_ACTORS
    if not valid:
        allowed = f"an integer from 1 to {MAX_ACTORS}"
        raise ScaleError(f"actors={actors!r} is invalid: expected {allowed}")
    return actors


class RunControl:
    """The wanted actor count of one run, and the metrics its driver last reported."""

    def __init__(self, run_id: str, name: str, run_dir: str, actors: int) -> None:
        self.run_id = run_id
        self.name = name
        self.run_dir = run_dir
        self.target_actors = check_actor_count(actors)
        self.started = time.time()
        self.state = "starting"
        self.metrics: dict[str, Any] = {}
        self.last_eval: float | None = None

    def scale(self, actors: int) -> dict[str, Any]:
        """Ask for `actors` rollout actors; the driver applies it before its next update."""
        if self.state in ("finished", "failed"):
            raise ScaleError(f"run {self.run_id} has {self.state}; there is nothing to scale")
        self.target_actors = check_actor_count(actors)
        return self.status()

    def report(self, metrics: dict[str, Any], state: str = "running") -> int:
        """The driver's latest figures; answers the actor count it should run."""
        if state not in STATES:
            raise ValueError(f"state={state!r}: expected one of {STATES}")
        self.state = state
        self.metrics = dict(metrics)
        if metrics.get(M.EVAL_RETURN) is not None:
            self.last_eval = metrics[M.EVAL_RETURN]
        return self.target_actors

    def status(self) -> dict[str, Any]:
        figures = {key: self.metrics.get(key) for key in STATUS_METRICS}
        figures[M.EVAL_RETURN] = self.last_eval
        figures[M.ACTORS_TARGET] = self.target_actors
        figures[M.UPTIME] = round(time.time() - self.started, 3)
        return {
            "run": self.run_id,
            "name": self.name,
            "state": self.state,
            "run_dir": self.run_dir,
            "metrics": json_safe(figures),
        }


def json_safe(value: Any) -> Any:
    """NaN and inf (a skipped update's loss) become None, at any depth: JSON has neither, and
    Prometheus and JSON clients both cope with a missing value."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
