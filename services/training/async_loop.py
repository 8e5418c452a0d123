"""Asynchronous A2C (A3C-style, with V-trace): the learner updates on the first segments ready
while every actor keeps sampling; nobody waits for the slowest actor or for the learner."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray

from services.training.learner_keeper import Update
from services.training.parts import RunParts

WAIT_S = 1.0
"""Longest the loop blocks at once, so stalls and a changed actor count are seen promptly."""


@dataclass
class _Call:
    actor_id: int
    segment: ray.ObjectRef
    since: float


def train_async(run: RunParts) -> None:
    """Each live actor always has one `sample` call in flight. When a call finishes, the actor
    is given the next one at once, with the newest weights that *landed* (a ref that is already
    resolved, so the actor never waits on an update in progress). The learner takes the first
    `algo.batch_segments` ready segments, oldest first, whenever it is idle; one update is in
    flight at a time. The queue of ready segments is bounded (twice the batch or the actor
    count): when the learner is the bottleneck, actors idle instead of sampling segments that
    would go stale.

    Segments therefore lag the learner by a version or more. The learner measures the lag
    (`policy/lag_mean`, `policy/lag_max`), leaves out segments more than
    `learner.max_policy_lag` behind, and corrects the rest with V-trace.
    """
    timeout_s = run.config.train.sample_timeout_s
    calls: dict[ray.ObjectRef, _Call] = {}  # receipt -> call
    ready: list[ray.ObjectRef] = []  # segments waiting for the learner, oldest first
    update: Update | None = None  # one at a time
    while True:
        run.fleet.poll()
        live = dict(run.fleet.items())
        for receipt in [r for r, c in calls.items() if c.actor_id not in live]:
            del calls[receipt]  # stopped by a resize, or replaced
        k = run.config.algo.batch_segments or max(1, len(live) // 2)
        if len(ready) < 2 * max(k, len(live)):
            busy = {call.actor_id for call in calls.values()}
            for actor_id in live.keys() - busy:
                segment, receipt = live[actor_id].sample.remote(run.learner.weights)
                calls[receipt] = _Call(actor_id, segment, time.monotonic())
        if not live:
            run.fleet.poll(timeout_s=WAIT_S)
            continue

        waiting = [*calls, *([update.stats] if update else [])]
        ray.wait(waiting, num_returns=1, timeout=WAIT_S)
        done = set(ray.wait(waiting, num_returns=len(waiting), timeout=0)[0])
        now = time.monotonic()
        for receipt in [r for r in calls if r in done]:
            call = calls.pop(receipt)
            if run.sampler.settle(call.actor_id, call.segment, receipt):
                ready.append(call.segment)
        for receipt in [r for r, c in calls.items() if now - c.since > timeout_s]:
            run.sampler.stalled(calls.pop(receipt).actor_id)

        if update is not None and update.stats in done:
            stats = run.learner.land(update)
            update = None
            if stats is not None and run.landed(stats):
                return
        if update is None and len(ready) >= k:
            batch, ready = ready[:k], ready[k:]
            update = run.learner.submit(batch)
