"""The one set of counters of a run: how far it has come, and what went wrong on the way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from learner import metrics as M

PROGRESS = ("frames", "updates", "episodes", "wall_time_s", "next_actor_id")
"""What a checkpoint keeps: a resumed run counts on from there, and its new actors take ids
(so seeds) the first attempt never used."""


@dataclass
class Counters:
    """Progress is counted by the run's update step; each fault where it is handled (the actor
    fleet, the sampler, the learner keeper). Fault counts start from zero in each attempt of
    a run: the `train.max_*` limits are per attempt."""

    frames: int = 0
    updates: int = 0
    episodes: int = 0
    wall_time_s: float = 0.0
    """Training time of the run so far, earlier attempts included."""
    next_actor_id: int = 0

    segments_dropped: int = 0
    actor_start_failures: int = 0
    actor_restarts: int = 0
    env_rebuilds: int = 0
    learner_restarts: int = 0
    rollbacks: int = 0

    @classmethod
    def resumed(cls, saved: Mapping[str, Any] | None) -> Counters:
        """Counters that carry on from a checkpoint's (None: a new run)."""
        return cls(**{key: saved[key] for key in PROGRESS if key in saved}) if saved else cls()

    def progress(self) -> dict[str, Any]:
        """The counters a checkpoint keeps."""
        return {key: getattr(self, key) for key in PROGRESS}

    def faults(self) -> dict[str, int]:
        """The fault counts, by metric name."""
        return {
            M.SEGMENTS_DROPPED: self.segments_dropped,
            M.ACTOR_START_FAILURES: self.actor_start_failures,
            M.ACTOR_RESTARTS: self.actor_restarts,
            M.ENV_REBUILDS: self.env_rebuilds,
            M.LEARNER_RESTARTS: self.learner_restarts,
            M.ROLLBACKS: self.rollbacks,
        }
