"""The rollout actors of a run, resized while it trains.

An actor is *pending* from its creation until it answers its readiness ping (its process,
imports and envs are up); only then does it sample. A request beyond the cluster's free
resources leaves actors pending, which costs training nothing: they join when resources appear
(an autoscaler adding nodes, say). The sync loop resizes between updates, when no segment is in
flight; the async loop drops the calls of the actors a resize stopped, so a removed actor's
partial segment never reaches the learner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ray

from services.training.counters import Counters

log = logging.getLogger(__name__)

START_TRIES = 3
"""How often one actor slot is started when its actor is lost before it came up (its process
or node died): a node lost mid-run takes the replacements placed on it before the cluster knew
(tested: a killed worker host). An actor whose own start raised (its env) is not tried again."""


class ActorFleet:
    """Live and pending rollout actors. `spawn(actor_id)` starts one actor; ids are never
    reused, so each actor's seeds are its own. Starts, failures and replacements are counted
    in `counters`."""

    def __init__(
        self, spawn: Callable[[int], Any], size: int, counters: Counters | None = None
    ) -> None:
        self._spawn = spawn
        self.counters = counters if counters is not None else Counters()
        self.live: dict[int, Any] = {}
        self._pending: dict[int, tuple[Any, ray.ObjectRef]] = {}
        self._tries: dict[int, int] = {}
        """Pending actor id: how many actors that slot has started, this one included."""
        self.target = size
        """The actor count last asked for."""
        self.resize(size)

    @property
    def size(self) -> int:
        return len(self.live) + len(self._pending)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def items(self) -> list[tuple[int, Any]]:
        """(id, handle) of the live actors, by id: a batch's order does not depend on which
        came up first."""
        return [(actor_id, self.live[actor_id]) for actor_id in sorted(self.live)]

    def resize(self, size: int) -> None:
        """Start or stop actors until `size` are live or pending. Stops pending ones first
        (they hold nothing yet), then the newest live ones."""
        self.target = size
        while self.size < size:
            self._start(tries=1)
        while self.size > size:
            if self._pending:
                actor_id = max(self._pending)
                handle, _ = self._pending.pop(actor_id)
                self._tries.pop(actor_id)
            else:
                handle = self.live.pop(max(self.live))
            ray.kill(handle, no_restart=True)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Move actors that came up to the live set; waits up to `timeout_s` for all pending.

        An actor lost before it came up (its process or node died) is started again, up to
        `START_TRIES` times for one slot, and counted as a restart. One whose start failed
        otherwise (its env raised), or that ran out of tries, is dropped, logged and counted as
        a start failure, so a bad node or env cannot make a start loop; the run trains on with
        the others. With no actor left at all, the failure is raised: nothing could train."""
        if not self._pending:
            return 0
        refs = {ref: actor_id for actor_id, (_, ref) in self._pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        for ref in ready:
            actor_id = refs[ref]
            handle, _ = self._pending.pop(actor_id)
            tries = self._tries.pop(actor_id)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                ray.kill(handle, no_restart=True)
                if _lost(err) and tries < START_TRIES:
                    self.counters.actor_restarts += 1
                    new_id = self._start(tries + 1)
                    log.warning(
                        "rollout actor %d was lost before it came up; starting %d in its "
                        "place: %s", actor_id, new_id, err,
                    )  # fmt: skip
                    continue
                self.counters.actor_start_failures += 1
                if not self.size:
                    raise
                log.warning("rollout actor %d failed to start and is left out: %s", actor_id, err)
                continue
            self.live[actor_id] = handle
        return len(ready)

    def wait_for_start(self, grace_s: float) -> None:
        """Wait for every actor, up to `grace_s`; then go on with those that are up (the rest
        stay pending and join when the cluster has room). With none up, keep waiting."""
        began = last_note = time.monotonic()
        while self._pending:
            self.poll(timeout_s=2.0)
            waited = time.monotonic() - began
            if self.live and waited >= grace_s:
                log.warning(
                    "%d rollout actors still wait for cluster resources; training with %d",
                    self.pending,
                    len(self.live),
                )
                return
            if not self.live and time.monotonic() - last_note >= grace_s:
                last_note = time.monotonic()
                log.warning(
                    "no rollout actor has started after %.0fs: the cluster has no free "
                    "resources for one (actors.num_cpus each); waiting",
                    waited,
                )

    def replace(self, actor_id: int, why: object) -> None:
        """Stop a live actor that failed or stalled and start a fresh one (a new id, so new
        seeds) in its place; it joins once up, from the newest weights."""
        handle = self.live.pop(actor_id)
        ray.kill(handle, no_restart=True)
        self.counters.actor_restarts += 1
        log.warning("replacing rollout actor %d: %s", actor_id, why)
        self._start(tries=1)

    def _start(self, tries: int) -> int:
        actor_id = self.counters.next_actor_id
        self.counters.next_actor_id += 1
        handle = self._spawn(actor_id)
        self._pending[actor_id] = (handle, handle.ready.remote())
        self._tries[actor_id] = tries
        return actor_id

    def shutdown(self) -> None:
        for handle in [*self.live.values(), *(h for h, _ in self._pending.values())]:
            ray.kill(handle, no_restart=True)
        self.live.clear()
        self._pending.clear()
        self._tries.clear()


def _lost(err: BaseException) -> bool:
    """The actor's process or node died (a system failure), as opposed to its constructor
    raising."""
    return isinstance(err, ray.exceptions.RayActorError) and not err.actor_init_failed
