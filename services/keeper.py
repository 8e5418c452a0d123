"""The run's learner actor, kept alive: restarted from the latest checkpoint when it dies,
rolled back to it when its updates keep coming out non-finite."""

from __future__ import annotations

import logging
from typing import Any

import ray

from learner import metrics as M
from learner.remote import spawn_learner
from services.checkpoint import Checkpoints
from services.config import RunConfig

log = logging.getLogger(__name__)


class LearnerFailed(RuntimeError):
    """The learner kept dying, or kept producing non-finite updates; the message says which
    and names the last cause."""


class LearnerKeeper:
    """Owns the learner actor of one run. `handle` is the live actor; after `restart` or a
    rollback it is a new or rewound one, and the caller takes the weights ref it returns."""

    def __init__(
        self,
        config: RunConfig,
        spaces: tuple,
        checkpoints: Checkpoints,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.spaces = spaces
        self.checkpoints = checkpoints
        self.restarts = 0
        self.rollbacks = 0
        self._streak = 0
        self._skipped = state["skipped_updates"] if state else 0
        self._rolled_back = False
        self._finite = 1  # finite updates since the last rollback (start: healthy)
        self.handle = self._spawn(state)

    def _spawn(self, state: dict[str, Any] | None):
        handle = spawn_learner(self.config.learner, *self.spaces, self.config.seed)
        if state is not None:
            handle.load_state.remote(state)
        return handle

    def restart(self, cause: BaseException) -> ray.ObjectRef:
        """Replace a dead learner with one loaded from the latest checkpoint (a fresh one if
        there is none yet); the run loses the updates since. Returns its weights' ref."""
        self.restarts += 1
        limit = self.config.train.max_learner_restarts
        if self.restarts > limit:
            raise LearnerFailed(
                f"the learner died {self.restarts} times (train.max_learner_restarts={limit}); "
                f"the last time: {cause}"
            )
        ray.kill(self.handle, no_restart=True)
        latest = self.checkpoints.latest()
        where = f"from {latest.name}" if latest else "from scratch (no checkpoint yet)"
        log.warning("the learner died (%s); restarting it %s", cause, where)
        self.handle = self._spawn(latest.learner if latest else None)
        self._skipped = latest.learner["skipped_updates"] if latest else 0
        self._streak = 0
        return self.handle.get_weights.remote()

    def after_update(self, stats: dict[str, Any]) -> ray.ObjectRef | None:
        """Watch for non-finite updates. After `train.max_nonfinite_updates` in a row, rewind
        the learner to the latest checkpoint and return its weights' ref; if it happens again
        before a newer checkpoint is saved, give up. None when nothing was done."""
        skipped = stats[M.SKIPPED_UPDATES]
        if skipped > self._skipped:
            self._streak += 1
        else:
            self._streak = 0
            self._finite += 1
        self._skipped = skipped
        limit = self.config.train.max_nonfinite_updates
        if not limit or self._streak < limit:
            return None
        latest = self.checkpoints.latest()
        if self._rolled_back or latest is None:
            why = "again after a rollback" if self._rolled_back else "and no checkpoint to restore"
            raise LearnerFailed(
                f"{self._streak} non-finite updates in a row (train.max_nonfinite_updates="
                f"{limit}), {why}: the loss or gradient is NaN/inf. Lower learner.lr, set "
                "learner.max_grad_norm, or check the env's rewards and observations"
            )
        ray.get(self.handle.load_state.remote(latest.learner))
        log.warning("%d non-finite updates in a row; rolled back to %s", self._streak, latest.path)
        self.rollbacks += 1
        self._rolled_back = True
        self._streak = 0
        self._finite = 0
        self._skipped = latest.learner["skipped_updates"]
        return self.handle.get_weights.remote()

    @property
    def healthy(self) -> bool:
        """False while non-finite updates are coming, and after a rollback until an update
        comes out finite: no checkpoint should be taken then."""
        return self._streak == 0 and self._finite > 0

    def checkpoint_saved(self) -> None:
        """A checkpoint of a healthy learner: a later run of non-finite updates may roll back
        to it once more."""
        if self.healthy:
            self._rolled_back = False

    def kill(self) -> None:
        ray.kill(self.handle, no_restart=True)
