"""Asynchronous A2C (A3C-style, with V-trace): the learner updates on the first segments ready
while every actor keeps sampling; nobody waits for the slowest actor or for the learner."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray

from learner import metrics as M
from services.fleet import ActorFleet
from services.keeper import LearnerKeeper
from services.rounds import Rounds
from services.trainer import Trainer, _Tally

WAIT_S = 1.0
"""Longest the loop blocks at once, so stalls and a changed actor count are seen promptly."""


@dataclass
class _Call:
    actor_id: int
    segment: ray.ObjectRef
    since: float


class AsyncA2C(Trainer):
    """Each live actor always has one `sample` call in flight. When a call finishes, the actor
    is given the next one at once, with the newest weights *published* (a ref that is already
    resolved, so the actor never waits on an update in progress). The learner takes the first
    `algo.batch_segments` ready segments, oldest first, whenever it is idle; one update is in
    flight at a time. The queue of ready segments is bounded (twice the batch or the actor
    count): when the learner is the bottleneck, actors idle instead of sampling segments that
    would go stale.

    Segments therefore lag the learner by a version or more. The learner measures the lag
    (`policy/lag_mean`, `policy/lag_max`), leaves out segments more than
    `learner.max_policy_lag` behind, and corrects the rest with V-trace.
    """

    def _train(self, keeper: LearnerKeeper, fleet: ActorFleet, link, tally: _Tally):
        train = self.config.train
        rounds = Rounds(train, fleet)
        weights_ref = keeper.handle.get_weights.remote()
        calls: dict[ray.ObjectRef, _Call] = {}  # receipt -> call
        ready: list[ray.ObjectRef] = []  # segments waiting for the learner, oldest first
        update: tuple[ray.ObjectRef, ray.ObjectRef] | None = None  # (stats, weights)
        failure = None
        while True:
            fleet.poll()
            live = dict(fleet.items())
            for receipt in [r for r, c in calls.items() if c.actor_id not in live]:
                del calls[receipt]  # stopped by a resize, or replaced
            k = self._batch_size(len(live))
            if len(ready) < 2 * max(k, len(live)):
                # Bounded: with the learner saturated, an idle actor waits for room rather
                # than sample segments that could only go stale in the queue.
                busy = {call.actor_id for call in calls.values()}
                for actor_id in live.keys() - busy:
                    segment, receipt = live[actor_id].sample.remote(weights_ref)
                    calls[receipt] = _Call(actor_id, segment, time.monotonic())
            if not live:
                fleet.poll(timeout_s=WAIT_S)
                continue

            waiting = [*calls, *([update[0]] if update else [])]
            ray.wait(waiting, num_returns=1, timeout=WAIT_S)
            done = set(ray.wait(waiting, num_returns=len(waiting), timeout=0)[0])
            now = time.monotonic()
            for receipt in [r for r in calls if r in done]:
                call = calls.pop(receipt)
                segment, why = rounds.settle(call.actor_id, call.segment, receipt)
                if segment is not None:
                    ready.append(segment)
                else:
                    failure = why
            for receipt in [r for r, c in calls.items() if now - c.since > train.sample_timeout_s]:
                failure = rounds.stalled(calls.pop(receipt).actor_id)

            if update is not None and update[0] in done:
                stats_ref, new_weights = update
                update = None
                try:
                    stats = ray.get(stats_ref)
                except ray.exceptions.RayActorError as err:
                    weights_ref = keeper.restart(err)  # the batch is lost with it
                    continue
                weights_ref = keeper.after_update(stats) or new_weights
                rounds.count(failure or (stats[M.REJECTIONS] or [None])[-1])
                failure = None
                if self._after_update(stats, tally, weights_ref, rounds, keeper, fleet, link):
                    return weights_ref
            if update is None and len(ready) >= k:
                batch, ready = ready[:k], ready[k:]
                update = keeper.handle.update.remote(*batch)

    def _batch_size(self, live: int) -> int:
        return self.config.algo.batch_segments or max(1, live // 2)
