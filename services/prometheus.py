"""Run metrics in Prometheus' text exposition format, one sample per run."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from learner import metrics as M
from services.control import STATUS_METRICS

PREFIX = "troupe_"
COUNTERS = frozenset(
    {
        M.FRAMES,
        M.UPDATES,
        M.SEGMENTS_DROPPED,
        M.ACTOR_START_FAILURES,
        M.ACTOR_RESTARTS,
        M.ENV_REBUILDS,
        M.SEGMENTS_REJECTED,
        M.LEARNER_RESTARTS,
        M.ROLLBACKS,
        M.SKIPPED_UPDATES,
        M.STALE_SEGMENTS,
    }
)
"""Figures that only grow; exposed as Prometheus counters (`..._total`)."""

HELP = {
    M.FRAMES: "Environment frames trained on",
    M.FPS: "Training frames per second",
    M.UPDATES: "Learner updates",
    M.POLICY_VERSION: "Version of the newest policy weights",
    M.LOSS_POLICY: "Policy-gradient loss of the last update",
    M.LOSS_VALUE: "Value loss of the last update",
    M.LOSS_ENTROPY: "Entropy loss term of the last update",
    M.ENTROPY: "Mean policy entropy of the last batch",
    M.GRAD_NORM: "Gradient norm before clipping",
    M.EPISODE_RETURN: "Mean return of recent training episodes",
    M.EVAL_RETURN: "Mean return of the latest evaluation",
    M.ACTORS_LIVE: "Rollout actors sampling",
    M.ACTORS_PENDING: "Rollout actors waiting for cluster resources",
    M.ACTORS_TARGET: "Rollout actors asked for",
    M.SEGMENTS_DROPPED: "Segments that never reached the learner",
    M.ACTOR_START_FAILURES: "Rollout actors that failed to start (left out, not retried)",
    M.ACTOR_RESTARTS: "Rollout actors replaced after failing or stalling mid-run",
    M.ENV_REBUILDS: "Envs rebuilt inside their actor after raising in step or reset",
    M.SEGMENTS_REJECTED: "Malformed segments the learner left out",
    M.LEARNER_RESTARTS: "Times the learner died and was restarted from a checkpoint",
    M.ROLLBACKS: "Rollbacks to the latest checkpoint after non-finite updates",
    M.SKIPPED_UPDATES: "Updates skipped for a non-finite loss or gradient",
    M.UPTIME: "Seconds since the run started",
    M.POLICY_LAG_MEAN: "Mean versions the last batch's policies were behind the learner",
    M.POLICY_LAG_MAX: "Most versions a segment of the last batch was behind the learner",
    M.STALE_SEGMENTS: "Segments left out for lagging more than learner.max_policy_lag",
    M.RHO_MEAN: "Mean truncated V-trace importance weight of the last batch",
}


def metric_name(key: str) -> str:
    """`loss/policy` -> `troupe_loss_policy`."""
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def exposition(statuses: Iterable[dict[str, Any]]) -> str:
    """Prometheus text format for runs' statuses (as `RunControl.status` returns them)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector, CollectorRegistry

    statuses = list(statuses)

    class _Runs(Collector):
        def collect(self):
            for key in STATUS_METRICS:
                family_cls = CounterMetricFamily if key in COUNTERS else GaugeMetricFamily
                family = family_cls(metric_name(key), HELP.get(key, key), labels=["run"])
                for status in statuses:
                    value = status["metrics"].get(key)
                    if value is not None:
                        family.add_metric([status["run"]], float(value))
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Runs())
    return generate_latest(registry).decode()
