"""Connecting to Ray: a given cluster, or an embedded local one started in process."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ray

from services.config import RunConfig

log = logging.getLogger(__name__)

LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}
"""Ray settings of an embedded local cluster. Ray runs its workers at nice 15 so that its own
daemons stay responsive on a shared node; on a machine given to one run the workers (the
learner and the actors) are the work, and at nice 15 the driver and Ray's daemons, at 0,
preempt them: a small-batch update waited milliseconds on that (README, *Small batches*).
Cluster nodes get the same through `RAY_worker_niceness=0` in deploy/."""


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on; ray.init would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return  # 'auto', ray:// and other forms: leave them to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(
            f"cannot connect to the Ray cluster at {address!r}: {err.strerror or err}. "
            "Is `ray start --head` running there, and is the port the GCS port (default 6379)?"
        ) from None


def cpus_needed(config: RunConfig) -> float:
    return config.learner.num_cpus + config.actors.num_actors * config.actors.num_cpus


@contextmanager
def ray_connection(
    config: RunConfig, address: str | None = None, num_cpus: float = 0.0
) -> Iterator[bool]:
    """Connect to `address` (or RAY_ADDRESS); with neither, start a local Ray in this process.

    The embedded cluster gets as many logical CPUs as the machine has cores, or as the run
    reserves (or `num_cpus`, a search's trial) if that is more: in sync A2C the actors sample
    while the learner waits and the learner updates while the actors wait, so the
    reservations never all run at once.
    Yields whether the cluster was started here (then it cannot grow), and stops it on exit.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield False
        return
    if address:
        _join(address, log_to_driver=True)
    else:
        cores = os.cpu_count() or 1
        ray.init(
            address="local",
            num_cpus=max(cores, math.ceil(max(cpus_needed(config), num_cpus))),
            include_dashboard=False,
            logging_level=logging.WARNING,
            _system_config=LOCAL_SYSTEM_CONFIG,
        )
    try:
        yield not address
    finally:
        ray.shutdown()


@contextmanager
def cluster_connection(address: str | None = None) -> Iterator[None]:
    """Join a running cluster to reach its runs (`troupe scale`, `metrics`, `serve`); never
    starts one. Default: RAY_ADDRESS, else the cluster running on this machine."""
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if address.startswith(("http://", "https://")):
        raise ConnectionError(
            f"{address!r} is a job API address; this command needs the cluster's address "
            "HOST:6379 (or run it on a cluster node, e.g. `ray exec CLUSTER.yaml '...'`)"
        )
    _join(address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _join(address: str, log_to_driver: bool) -> None:
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    except (ConnectionError, ray.exceptions.AuthenticationError) as err:
        raise ConnectionError(
            f"cannot connect to the Ray cluster at {address!r}: {err}. Check the address, "
            "and that this machine has the cluster's auth token (RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token)"
        ) from err


def watch_gcs(
    address: str, on_gone: Callable[[], None], every_s: float = 2.0, misses: int = 3
) -> threading.Thread:
    """Call `on_gone` once the GCS at HOST:PORT has refused `misses` connections in a row.

    A long-lived client (`troupe serve`) ends with its cluster this way, within seconds of
    `ray stop` or `ray down` on the head; Ray's own client would only give up after 60 s."""

    def watch() -> None:
        failed = 0
        while failed < misses:
            time.sleep(every_s)
            try:
                _check_reachable(address, timeout_s=every_s)
                failed = 0
            except ConnectionError:
                failed += 1
        on_gone()

    thread = threading.Thread(target=watch, name="troupe-gcs-watch", daemon=True)
    thread.start()
    return thread
