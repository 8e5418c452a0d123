"""One sampling round of the sync loop, and what it does about actors that fail in it."""

from __future__ import annotations

import logging

import ray

from actors.rollout import EnvCrashed
from services.config import TrainConfig
from services.fleet import ActorFleet

log = logging.getLogger(__name__)


class ActorFailures(RuntimeError):
    """Rollout actors kept failing (`train.max_actor_failures`); names the last failure."""


class Rounds:
    """Collects one segment from each live actor per round, replacing actors that fail, and
    ends the run when rounds keep failing.

    A failure costs that actor's segment, never the round: the update goes ahead with the
    others. An env that raised has been rebuilt inside its actor (cheap); an actor whose
    process died, or that stalls past `train.sample_timeout_s`, is replaced (a process start).
    """

    def __init__(self, train: TrainConfig, fleet: ActorFleet) -> None:
        self.train = train
        self.fleet = fleet
        self.segments_dropped = 0
        self.env_rebuilds = 0
        self.failed_in_a_row = 0

    def sample(self, actors: list, weights_ref) -> tuple[list, object | None]:
        """Segment refs of the actors that delivered, and the round's last failure (None if
        none). The driver waits on each call's small frame-count object, never fetching a
        segment: segment refs go straight to the learner."""
        timeout = self.train.sample_timeout_s
        calls = [(actor_id, *handle.sample.remote(weights_ref)) for actor_id, handle in actors]
        receipts = [receipt for _, _, receipt in calls]
        ready, _ = ray.wait(receipts, num_returns=len(receipts), timeout=timeout)
        ready = set(ready)
        segments, failure = [], None
        for actor_id, segment, receipt in calls:
            if receipt in ready:
                segment, why = self.settle(actor_id, segment, receipt)
            else:
                segment, why = None, self.stalled(actor_id)
            if segment is not None:
                segments.append(segment)
            else:
                failure = why
        return segments, failure

    def settle(self, actor_id: int, segment, receipt) -> tuple[object | None, object | None]:
        """(segment ref, None) for a finished `sample` call that delivered; (None, why) for
        one whose env crashed (rebuilt in place) or whose actor failed (replaced)."""
        try:
            frames = ray.get(receipt)
        except ray.exceptions.RayError as err:
            self.segments_dropped += 1
            self.fleet.replace(actor_id, err)
            return None, err
        if isinstance(frames, EnvCrashed):
            self.segments_dropped += 1
            self.env_rebuilds += 1
            log.warning("%s", frames)
            return None, frames
        return segment, None

    def stalled(self, actor_id: int) -> str:
        """Replace an actor whose segment is `train.sample_timeout_s` late."""
        why = f"no segment within train.sample_timeout_s={self.train.sample_timeout_s}s"
        self.segments_dropped += 1
        self.fleet.replace(actor_id, why)
        return why

    def count(self, failure: object | None) -> None:
        """A round in which an actor failed or sent a segment the learner left out counts
        against `train.max_actor_failures`; a clean round resets the count."""
        limit = self.train.max_actor_failures
        if failure is None:
            self.failed_in_a_row = 0
            return
        self.failed_in_a_row += 1
        if self.failed_in_a_row > limit:
            raise ActorFailures(
                f"rollout actors failed or sent malformed segments in {self.failed_in_a_row} "
                f"rounds in a row (train.max_actor_failures={limit}); the last: {failure}"
            )
