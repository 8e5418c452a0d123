"""Getting segments from the rollout actors, and what is done about actors that fail."""

from __future__ import annotations

import logging

import ray

from actors.rollout import EnvCrashed
from services.config import TrainConfig
from services.training.counters import Counters
from services.training.fleet import ActorFleet

log = logging.getLogger(__name__)


class ActorFailures(RuntimeError):
    """Rollout actors kept failing (`train.max_actor_failures`); names the last failure."""


class Sampler:
    """Settles `sample` calls, replacing actors that fail, and ends the run when batches keep
    failing.

    A failure costs that actor's segment, never the update: it goes ahead with the others. An
    env that raised has been rebuilt inside its actor (cheap); an actor whose process died, or
    that stalls past `train.sample_timeout_s`, is replaced (a process start). The driver waits
    on each call's small frame-count object (its receipt), never fetching a segment: segment
    refs go straight to the learner.
    """

    def __init__(self, train: TrainConfig, fleet: ActorFleet, counters: Counters) -> None:
        self.train = train
        self.fleet = fleet
        self.counters = counters
        self.failure: object | None = None
        """The last failure since the last batch was closed."""
        self.failed_in_a_row = 0

    def round(self, actors: list, weights_ref) -> list:
        """One segment from each of `actors` (id, handle), sampled with `weights_ref`: the
        refs of those that delivered within `train.sample_timeout_s`. A round in which every
        actor failed closes its batch here (nothing goes to the learner)."""
        calls = [(actor_id, *handle.sample.remote(weights_ref)) for actor_id, handle in actors]
        receipts = [receipt for _, _, receipt in calls]
        done, _ = ray.wait(receipts, num_returns=len(receipts), timeout=self.train.sample_timeout_s)
        done = set(done)
        segments = []
        for actor_id, segment, receipt in calls:
            if receipt not in done:
                self.stalled(actor_id)
            elif self.settle(actor_id, segment, receipt):
                segments.append(segment)
        if not segments:
            self.close_batch([])
        return segments

    def settle(self, actor_id: int, segment, receipt) -> bool:
        """Whether a finished `sample` call delivered its segment. If not, its env crashed
        (rebuilt in place) or its actor failed (replaced): counted, and kept as the failure."""
        try:
            frames = ray.get(receipt)
        except ray.exceptions.RayError as err:
            self.failed(actor_id, err)
            return False
        return self.delivered(frames)

    def failed(self, actor_id: int, err: BaseException) -> None:
        """Replace an actor whose `sample` call raised or whose process died."""
        self._failed(err)
        self.fleet.replace(actor_id, err)

    def delivered(self, frames: int | EnvCrashed) -> bool:
        """Whether a `sample` call's receipt (its frame count, or the crash of its env, which
        the actor has rebuilt) says a segment was delivered; a crash is counted and kept."""
        if isinstance(frames, EnvCrashed):
            self._failed(frames)
            self.counters.env_rebuilds += 1
            log.warning("%s", frames)
            return False
        return True

    def stalled(self, actor_id: int) -> None:
        """Replace an actor whose segment is `train.sample_timeout_s` late."""
        why = f"no segment within train.sample_timeout_s={self.train.sample_timeout_s}s"
        self._failed(why)
        self.fleet.replace(actor_id, why)

    def close_batch(self, rejections: list[str]) -> None:
        """The sampling of one update's batch is over. If an actor failed in it, or the learner
        left out one of its segments, it counts against `train.max_actor_failures`; a clean
        batch resets the count."""
        failure = self.failure or (rejections[-1] if rejections else None)
        self.failure = None
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

    def _failed(self, why: object) -> None:
        self.counters.segments_dropped += 1
        self.failure = why
