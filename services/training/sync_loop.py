"""Synchronous A2C: every update takes one segment from each live actor, all produced by the
same policy version, so learning is exactly on-policy."""

from __future__ import annotations

from services.training.parts import RunParts

IDLE_WAIT_S = 1.0
"""With no live actor, how long to wait for one to come up before looking again."""


def train_sync(run: RunParts) -> None:
    """In flight at any time: one segment per live actor, then one update. The batch follows
    the live actor count; resizes happen between updates, when nothing is in flight, so no
    segment is ever cut short. Nothing else runs while the driver evaluates, so evaluation
    time comes out of the training clock exactly. (Queueing the next round before reading the
    update's statistics measured no faster.)"""
    while True:
        run.fleet.poll()
        actors = run.fleet.items()
        if not actors:
            run.fleet.poll(timeout_s=IDLE_WAIT_S)
            continue
        segments = run.sampler.round(actors, run.learner.weights)
        if not segments:
            continue  # every actor failed; their replacements join once up
        stats = run.learner.land(run.learner.submit(segments))
        if stats is not None and run.landed(stats):
            return
