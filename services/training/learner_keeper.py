"""The run's learner actor, kept alive: restarted from the latest checkpoint when it dies,
rolled back to it when its updates keep coming out non-finite."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import ray

from learner import metrics as M
from learner.remote import spawn_learner
from services.config import RunConfig
from services.storage.checkpoints import Checkpoints
from services.training.counters import Counters

log = logging.getLogger(__name__)

STATE_TIMEOUT_S = 30.0
"""Longest a checkpoint waits for the learner's state: a learner that does not answer in this
time is taken for failed (a healthy one answers in well under a second)."""


class LearnerFailed(RuntimeError):
    """The learner kept dying, or kept producing non-finite updates; the message says which
    and names the last cause."""


class Update(NamedTuple):
    """An update in flight: the refs of its statistics and of the weights it makes."""

    stats: ray.ObjectRef
    weights: ray.ObjectRef


class LearnerKeeper:
    """Owns the learner actor of one run, and `weights`: the ref of the newest weights that
    landed, which the actors sample with. Restarts and rollbacks are counted in `counters`.

    It also keeps the update the learner made that the run has not counted yet (`uncounted`):
    a stop or a failure can come between the two, and the run's last checkpoint must then
    count it too, or its weights would be one update past its counters."""

    def __init__(
        self,
        config: RunConfig,
        spaces: tuple,
        checkpoints: Checkpoints,
        counters: Counters,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.spaces = spaces
        self.checkpoints = checkpoints
        self.counters = counters
        self._nonfinite = 0  # non-finite updates in a row
        self._skipped = state["skipped_updates"] if state else 0
        self._rolled_back = False
        self._finite = 1  # finite updates since the last rollback (start: healthy)
        self._uncounted: Update | dict[str, Any] | None = None
        self._handle = self._spawn(state)

    def _spawn(self, state: dict[str, Any] | None):
        config = self.config
        handle = spawn_learner(config.learner, *self.spaces, config.seed, config.train.total_frames)
        if state is not None:
            handle.load_state.remote(state)
        self._weights = handle.get_weights.remote()
        return handle

    @property
    def handle(self):
        """The learner actor (a new one after each restart)."""
        return self._handle

    @property
    def weights(self) -> ray.ObjectRef:
        """The ref of the newest weights. After updates that landed through a compiled round
        (which leaves them in the learner) it is fetched on first use."""
        if self._weights is None:
            self._weights = self._handle.get_weights.remote()
        return self._weights

    def landed_in_place(self, stats: dict[str, Any] | None) -> dict[str, Any] | None:
        """An update that a compiled round made: its weights stay in the learner until asked
        for (see `weights`)."""
        if stats is not None:
            self._weights = None
            self._uncounted = stats
        return stats

    def device(self) -> str:
        """The learner's torch device; answers once its process is up."""
        return ray.get(self._handle.device.remote())

    def submit(self, segments: list) -> Update:
        update = Update(*self._handle.update.remote(*segments))
        self._uncounted = update
        return update

    def land(self, update: Update) -> dict[str, Any] | None:
        """The statistics of a finished update, whose weights become the newest. None when
        the learner died with it: it is restarted (see `restart`) and the batch is lost."""
        try:
            stats = ray.get(update.stats)
        except ray.exceptions.RayActorError as err:
            self.restart(err)
            return None
        self._weights = update.weights
        self._uncounted = stats
        return stats

    def counted(self) -> None:
        """The run has counted the last update (see `uncounted`)."""
        self._uncounted = None

    def uncounted(self) -> dict[str, Any] | None:
        """The statistics of the update the learner made (or is making) that the run has not
        counted, for a run that ends between the two; None if there is none. Raises Ray's
        error (`GetTimeoutError` after `STATE_TIMEOUT_S`) if the learner cannot finish it."""
        pending, self._uncounted = self._uncounted, None
        if not isinstance(pending, Update):
            return pending
        return ray.get(pending.stats, timeout=STATE_TIMEOUT_S)

    def restart_if_dead(self, cause: BaseException) -> None:
        """`restart` if the learner's process is gone (`cause` may say so or not: a compiled
        graph reports a broken channel either way)."""
        try:
            ray.get(self._handle.device.remote(), timeout=STATE_TIMEOUT_S)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            self.restart(cause)

    def restart(self, cause: BaseException) -> None:
        """Replace a dead learner with one loaded from the latest checkpoint (a fresh one if
        there is none yet); the run loses the updates since."""
        self.counters.learner_restarts += 1
        limit = self.config.train.max_learner_restarts
        if self.counters.learner_restarts > limit:
            raise LearnerFailed(
                f"the learner died {self.counters.learner_restarts} times "
                f"(train.max_learner_restarts={limit}); the last time: {cause}"
            )
        ray.kill(self._handle, no_restart=True)
        latest = self.checkpoints.latest()
        where = f"from {latest.name}" if latest else "from scratch (no checkpoint yet)"
        log.warning("the learner died (%s); restarting it %s", cause, where)
        self._handle = self._spawn(latest.learner if latest else None)
        self._uncounted = None  # lost with the learner that made it
        self._skipped = latest.learner["skipped_updates"] if latest else 0
        self._nonfinite = 0

    def needs_rollback(self, stats: dict[str, Any]) -> bool:
        """Whether `train.max_nonfinite_updates` updates in a row, the one of `stats`
        included, were skipped for a non-finite loss or gradient."""
        skipped = stats[M.SKIPPED_UPDATES]
        if skipped > self._skipped:
            self._nonfinite += 1
        else:
            self._nonfinite = 0
            self._finite += 1
        self._skipped = skipped
        limit = self.config.train.max_nonfinite_updates
        return bool(limit) and self._nonfinite >= limit

    def roll_back(self) -> None:
        """Rewind the learner to the latest checkpoint, whose weights become the newest. A
        second rollback before a newer checkpoint is saved gives up: the run fails."""
        latest = self.checkpoints.latest()
        if self._rolled_back or latest is None:
            why = "again after a rollback" if self._rolled_back else "and no checkpoint to restore"
            raise LearnerFailed(
                f"{self._nonfinite} non-finite updates in a row (train.max_nonfinite_updates="
                f"{self.config.train.max_nonfinite_updates}), {why}: the loss or gradient is "
                "NaN/inf. Lower learner.lr, set learner.max_grad_norm, or check the env's "
                "rewards and observations"
            )
        ray.get(self._handle.load_state.remote(latest.learner))
        log.warning(
            "%d non-finite updates in a row; rolled back to %s", self._nonfinite, latest.path
        )
        self.counters.rollbacks += 1
        self._rolled_back = True
        self._nonfinite = 0
        self._finite = 0
        self._skipped = latest.learner["skipped_updates"]
        self._weights = self._handle.get_weights.remote()

    @property
    def healthy(self) -> bool:
        """False while non-finite updates are coming, and after a rollback until an update
        comes out finite: no checkpoint should be taken then."""
        return self._nonfinite == 0 and self._finite > 0

    def state(self) -> dict[str, Any]:
        """The learner's full state, for a checkpoint (see `Learner.state`)."""
        return ray.get(self._handle.state.remote(), timeout=STATE_TIMEOUT_S)

    def checkpoint_saved(self) -> None:
        """A checkpoint of a healthy learner: a later run of non-finite updates may roll back
        to it once more."""
        if self.healthy:
            self._rolled_back = False

    def kill(self) -> None:
        ray.kill(self._handle, no_restart=True)
