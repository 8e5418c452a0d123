"""When a run saves a checkpoint, and what goes in it."""

from __future__ import annotations

import logging
import time

import ray

from services.config import RunConfig
from services.storage.checkpoints import Checkpoints
from services.training.counters import Counters
from services.training.learner_keeper import LearnerKeeper

log = logging.getLogger(__name__)


class CheckpointSchedule:
    """Saves the learner's state with the run's counters every `checkpoint.every_updates`
    updates or `checkpoint.every_s` seconds (whichever comes first), never while the learner
    is unhealthy; and once more when the run ends."""

    def __init__(self, config: RunConfig, store: Checkpoints, counters: Counters) -> None:
        self.config = config
        self.store = store
        self.counters = counters
        # (updates, time) of the last attempt, which schedules the next; and the updates the
        # newest checkpoint holds.
        self._tried = (counters.updates, time.monotonic())
        self._saved_updates = counters.updates

    def maybe_save(self, learner: LearnerKeeper) -> None:
        every = self.config.checkpoint
        updates, at = self._tried
        due_count = every.every_updates and self.counters.updates - updates >= every.every_updates
        due_time = every.every_s and time.monotonic() - at >= every.every_s
        if (due_count or due_time) and learner.healthy:
            self.save(learner)

    def save(self, learner: LearnerKeeper, final: bool = False) -> None:
        """Save now. A final save (the run ends, fails or is stopped) is best effort: the
        learner may be the thing that failed. Storage that fails is logged, and the run trains
        on: the next save is tried when due."""
        if final and self._saved_updates == self.counters.updates:
            return  # nothing learned since the last save (or at all)
        try:
            state = learner.state()
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as err:
            if not final:
                raise
            log.warning("no final checkpoint: the learner did not answer (%s)", err)
            return
        self._tried = (self.counters.updates, time.monotonic())
        try:
            path = self.store.save(state, self.counters.progress(), self.config.to_dict())
        except Exception as err:  # storage down or full: train on, try again when next due
            log.error("checkpoint to %s failed: %s", self.store.location, err)
            return
        self._saved_updates = self.counters.updates
        learner.checkpoint_saved()
        log.info("checkpoint %s", path)
