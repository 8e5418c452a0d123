"""Connecting to Ray: a given cluster, or an embedded local one started in process."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from services.config import RunConfig

log = logging.getLogger(__name__)


def cpus_needed(config: RunConfig) -> float:
    return config.learner.num_cpus + config.actors.num_actors * config.actors.num_cpus


@contextmanager
def ray_connection(config: RunConfig, address: str | None = None) -> Iterator[str]:
    """Connect to `address` (or RAY_ADDRESS); with neither, start a local Ray in this process.

    The embedded cluster gets as many logical CPUs as the machine has cores, or as the run
    reserves if that is more: in sync A2C the actors sample while the learner waits and the
    learner updates while the actors wait, so the reservations never all run at once.
    Yields the address of the cluster; a cluster started here is stopped on exit.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        cores = os.cpu_count() or 1
        ray.init(
            address="local",
            num_cpus=max(cores, math.ceil(cpus_needed(config))),
            include_dashboard=False,
            **kwargs,
        )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
