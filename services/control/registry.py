"""Runs on a cluster: each is a named `RunControl` actor in one namespace, so any process
connected to the cluster finds it by name, and two runs never share one."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import ray
from ray.exceptions import ActorAlreadyExistsError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from learner import metrics as M
from services.control.prometheus import metric_name
from services.control.run_control import (
    RunConflict,
    RunControl,
    RunNotFound,
    ScaleError,
    check_actor_count,
)

log = logging.getLogger(__name__)

NAMESPACE = "troupe"
CALL_TIMEOUT_S = 10.0
"""Longest a client waits on a run's control actor before taking the run for gone."""
FINAL_REPORT_TIMEOUT_S = 5.0
"""Longest a finishing run waits to leave its final state: teardown must not hang on it."""


class _ControlActor(RunControl):
    """`RunControl` that also exports every reported figure through `ray.util.metrics`, so
    Ray's own Prometheus/Grafana pipeline shows them (tagged with the run)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._gauges: dict[str, Any] = {}

    @ray.method(enable_task_events=False)  # 4 a second for the whole run
    def report(self, metrics: dict[str, Any], state: str = "running") -> int:
        target = super().report(metrics, state)
        from ray.util.metrics import Gauge

        for key, value in self.status()["metrics"].items():
            if value is None:
                continue
            if key not in self._gauges:
                self._gauges[key] = Gauge(
                    metric_name(key), description=M.TABLE[key].help, tag_keys=("run",)
                )
            self._gauges[key].set(float(value), tags={"run": self.run_id})
        return target


NAME_RELEASE_S = 10.0
"""How long a run waits for its id to be free: the run's earlier driver, killed (a lost job
rerun at once), leaves its control actor registered until Ray has noticed it died."""


def spawn_control(
    run_id: str, name: str, run_dir: str, actors: int, wait_s: float = NAME_RELEASE_S
):
    """Register a run; fails if a run with this id is already on the cluster. The actor
    belongs to the driver, so it ends with the run (and with `troupe stop`). It lives on the
    driver's node, which an autoscaler never removes while the driver runs."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(num_cpus=0, max_restarts=0)(_ControlActor)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return cls.options(name=run_id, namespace=NAMESPACE, scheduling_strategy=here).remote(
                run_id, name, run_dir, actors
            )
        except ActorAlreadyExistsError as err:
            if time.monotonic() >= deadline:
                raise RunConflict(
                    f"a run named {run_id!r} is already registered on this cluster ({err})"
                ) from None
            time.sleep(0.5)


def list_runs() -> list[str]:
    """Ids of the runs on the connected cluster, sorted."""
    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE
    )


STAMPED = r"-\d{8}-\d{6}(-[0-9a-f]{6}|-\d+)?"
"""What `RunDir.create` appends to a config's name: date, time and a random part (`-N` in
runs started before it had one)."""


def resolve_run(ref: str, runs: list[str]) -> str:
    """A run id from `ref`: the exact id, or a config name that one running run has."""
    if ref in runs:
        return ref
    by_name = [r for r in runs if re.fullmatch(re.escape(ref) + STAMPED, r)]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise RunNotFound(f"{ref!r} names several runs: {', '.join(by_name)}; give the full id")
    running = ", ".join(runs) if runs else "none"
    raise RunNotFound(f"no run {ref!r} on this cluster (running: {running})")


def find_run(ref: str):
    """(run id, control actor handle) of a running run."""
    run_id = resolve_run(ref, list_runs())
    try:
        return run_id, ray.get_actor(run_id, namespace=NAMESPACE)
    except ValueError:
        raise RunNotFound(f"run {run_id!r} has just ended") from None


def run_status(handle) -> dict[str, Any]:
    try:
        return ray.get(handle.status.remote(), timeout=CALL_TIMEOUT_S)
    except ray.exceptions.RayActorError:
        raise RunNotFound("the run has ended") from None


def scale_run(handle, actors: int) -> dict[str, Any]:
    """Ask a run for `actors` rollout actors; answers its status."""
    try:
        return ray.get(handle.scale.remote(check_actor_count(actors)), timeout=CALL_TIMEOUT_S)
    except ScaleError as err:  # raised in the actor: keep its message, not the traceback
        raise ScaleError(str(getattr(err, "cause", err))) from None
    except ray.exceptions.RayActorError:
        raise RunNotFound("the run has ended") from None


class RunLink:
    """The driver's side of its `RunControl`. Reports never block training: a new one goes
    only once the last is answered, and if the control actor is lost the run trains on at
    its current size (it can no longer be found or scaled)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self._pending: ray.ObjectRef | None = None
        self._lost = False

    def exchange(self, record: dict[str, Any]) -> int | None:
        """Send `record` if the last report has been answered; returns the actor count that
        answer asked for, or None when there is no new answer."""
        if self._lost:
            return None
        wanted = None
        if self._pending is not None:
            if not ray.wait([self._pending], timeout=0)[0]:
                return None
            try:
                wanted = ray.get(self._pending)
            except ray.exceptions.RayActorError as err:
                log.warning("lost this run's control actor; training on unscaled: %s", err)
                self._lost = True
                return None
        self._pending = self.handle.report.remote(record)
        return wanted

    def close(self, record: dict[str, Any], state: str) -> None:
        """Leave the final figures and state (finished or failed), then end the actor."""
        if not self._lost:
            try:
                ray.get(self.handle.report.remote(record, state), timeout=FINAL_REPORT_TIMEOUT_S)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as err:
                log.warning("could not report the run's final state: %s", err)
        ray.kill(self.handle)


class RayRuns:
    """The runs of the connected cluster, as the HTTP API serves them."""

    def statuses(self) -> list[dict[str, Any]]:
        handles = []
        for run_id in list_runs():
            try:
                handles.append(ray.get_actor(run_id, namespace=NAMESPACE))
            except ValueError:
                continue  # ended since it was listed
        refs = [handle.status.remote() for handle in handles]
        statuses = []
        for ref in refs:
            try:
                statuses.append(ray.get(ref, timeout=CALL_TIMEOUT_S))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue
        return statuses

    def status(self, ref: str) -> dict[str, Any]:
        return run_status(find_run(ref)[1])

    def scale(self, ref: str, actors: int) -> dict[str, Any]:
        return scale_run(find_run(ref)[1], actors)
