"""Synchronous A2C: every update takes one segment from each live actor, all produced by the
same policy version, so learning is exactly on-policy."""

from __future__ import annotations

import ray

from learner import metrics as M
from services.fleet import ActorFleet
from services.keeper import LearnerKeeper
from services.rounds import Rounds
from services.trainer import Trainer, _Tally


class SyncA2C(Trainer):
    """In flight at any time: one segment per live actor, then one update. The batch follows
    the live actor count; resizing happens between updates, when nothing is in flight, so no
    segment is ever cut short."""

    def _train(self, keeper: LearnerKeeper, fleet: ActorFleet, link, tally: _Tally):
        rounds = Rounds(self.config.train, fleet)
        weights_ref = keeper.handle.get_weights.remote()
        while True:
            fleet.poll()
            actors = fleet.items()
            if not actors:
                fleet.poll(timeout_s=1.0)
                continue
            # Nothing else is in flight while the driver evaluates, so evaluation time can be
            # taken out of the training clock exactly. (Queueing the next round before reading
            # the statistics measured no faster.)
            segments, failure = rounds.sample(actors, weights_ref)
            if not segments:
                rounds.count(failure)
                continue  # every actor failed; their replacements join once up
            stats_ref, weights_ref = keeper.handle.update.remote(*segments)
            try:
                stats = ray.get(stats_ref)
            except ray.exceptions.RayActorError as err:
                weights_ref = keeper.restart(err)  # these segments are lost with it
                continue
            weights_ref = keeper.after_update(stats) or weights_ref
            rounds.count(failure or (stats[M.REJECTIONS] or [None])[-1])
            if self._after_update(stats, tally, weights_ref, rounds, keeper, fleet, link):
                return weights_ref
