"""Run metrics in Prometheus' text exposition format, one sample per run."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from learner import metrics as M
from services.control.run_control import STATUS_METRICS

PREFIX = "troupe_"


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
                metric = M.TABLE[key]
                family_cls = CounterMetricFamily if metric.kind == M.COUNTER else GaugeMetricFamily
                family = family_cls(metric_name(key), metric.help, labels=["run"])
                for status in statuses:
                    value = status["metrics"].get(key)
                    if value is not None:
                        family.add_metric([status["run"]], float(value))
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Runs())
    return generate_latest(registry).decode()
