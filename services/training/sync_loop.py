"""Synchronous A2C: every update takes one segment from each live actor, all produced by the
same policy version, so learning is exactly on-policy."""

from __future__ import annotations

import logging

from learner import metrics as M
from services.training.compiled import CompiledRounds, NoGraph, RoundFailed
from services.training.parts import RunParts
from services.training.stopping import TERMINATION

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
"""With no live actor, how long to wait for one to come up before looking again."""


def train_sync(run: RunParts) -> None:
    """In flight at any time: one segment per live actor, then one update. The batch follows
    the live actor count; resizes happen between updates, when nothing is in flight, so no
    segment is ever cut short. Nothing else runs while the driver evaluates, so evaluation
    time comes out of the training clock exactly. (Queueing the next round before reading the
    update's statistics measured no faster.)

    Rounds run as a compiled graph (`train.compiled_graph`, see `CompiledRounds`), or as
    plain actor calls: when that is off, and for a round the graph could not complete."""
    compiled = CompiledRounds(run) if run.config.train.compiled_graph else None
    try:
        while True:
            run.fleet.poll()
            actors = run.fleet.items()
            if not actors:
                run.fleet.poll(timeout_s=IDLE_WAIT_S)
                continue
            stats = _round(run, actors, compiled)
            if stats is not None and run.landed(stats):
                return
    finally:
        if compiled is not None:
            compiled.close()


def _round(run: RunParts, actors: list, compiled: CompiledRounds | None) -> dict | None:
    """One round's update statistics; None when it made no update (every actor failed, or
    the learner died and was restarted)."""
    if compiled is not None:
        try:
            # A stop (SIGTERM) raised inside the graph's channel code would leave it
            # half-read, and its teardown crashed the process: it waits for the round's end.
            with TERMINATION.held():
                stats = compiled.round(actors)
                if stats is not None:  # in place: the learner keeps it until counted
                    stats[M.COMPILED_ROUND] = 1
            return stats
        except NoGraph:
            pass
        except RoundFailed as failed:
            log.warning("%s; running the round as plain actor calls", failed)
            actors = run.fleet.items()  # without those just replaced
            if not actors:
                return None
    segments = run.sampler.round(actors, run.learner.weights)
    if not segments:
        return None  # every actor failed; their replacements join once up
    stats = run.learner.land(run.learner.submit(segments))
    if stats is not None:
        stats[M.COMPILED_ROUND] = 0
    return stats
