"""The parts of one training run, held together, and the step every loop takes when an update
lands: count, evaluate, log, checkpoint, report and resize."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from actors.remote import spawn_rollout_actors
from learner import metrics as M
from services.config import RunConfig
from services.control.registry import RunLink, spawn_control
from services.storage.checkpoints import Checkpoint, Checkpoints
from services.storage.rundir import MODEL_FILE, RunDir
from services.tracking.trackers import Trackers, open_trackers
from services.training.checkpointing import CheckpointSchedule
from services.training.counters import Counters
from services.training.evaluation import Evaluator
from services.training.fleet import ActorFleet
from services.training.learner_keeper import LearnerKeeper
from services.training.sampling import Sampler
from services.training.stopping import TERMINATION

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.25
"""How often the run reports metrics to its `RunControl` and takes the wanted actor count."""

OnUpdate = Callable[[dict[str, Any]], None]


class RunParts:
    """A run's learner (`learner`), rollout actors (`fleet`, sampled through `sampler`),
    control actor (`link`), `evaluator`, `checkpoints` schedule, run directory and `counters`.

    Built in that order: the learner first, as its process takes longest to start (torch) and
    the rest start while it imports. `close` takes down whatever was built."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        spaces: tuple,
        resume: Checkpoint | None = None,
        on_update: OnUpdate | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.on_update = on_update or (lambda record: None)
        self.counters = Counters.resumed(resume.counters if resume else None)
        # Where an earlier attempt of the run left off: this attempt's clock adds to it.
        self._frames_before, self._wall_before = self.counters.frames, self.counters.wall_time_s
        ckpt = config.checkpoint
        store = Checkpoints.for_run(run_dir.path, ckpt.storage, ckpt.keep, ckpt.storage_options)
        store.claim(new=run_dir.new)  # another run's folder: refused before any Ray work
        self.checkpoints = CheckpointSchedule(config, store, self.counters)
        self.evaluator = Evaluator(config)
        self.returns: deque[float] = deque(maxlen=config.train.return_window)
        self.lengths: deque[int] = deque(maxlen=config.train.return_window)
        self.record: dict[str, Any] = {}
        """The last update's metrics line."""
        self._unlogged: dict[str, Any] | None = None  # counted, its line not yet written
        self.learner = self.fleet = self.link = None
        self.trackers = Trackers([])
        try:
            self.learner = LearnerKeeper(
                config, spaces, store, self.counters, resume.learner if resume else None
            )
            run_id = run_dir.path.name
            self.link = RunLink(
                spawn_control(
                    run_id, config.name, str(run_dir.path.resolve()), config.actors.num_actors
                )
            )
            self.fleet = ActorFleet(self._spawn_actor, config.actors.num_actors, self.counters)
            if not run_dir.new:  # a run that died past its checkpoint logged beyond it
                run_dir.rewind(self.counters.updates, self.counters.frames)
            run_dir.open_logs()  # while the learner and actors start
            self.trackers = open_trackers(
                config.logging, config.to_dict(), run_dir.path.name, run_dir.path
            )
        except BaseException:
            self.close("failed")
            raise
        self.sampler = Sampler(config.train, self.fleet, self.counters)
        self.started = self._last_report = time.perf_counter()

    def _spawn_actor(self, actor_id: int):
        cfg = self.config
        compiled = cfg.algo.mode == "sync" and cfg.train.compiled_graph
        return spawn_rollout_actors(
            cfg.env, cfg.actors, cfg.learner.model, cfg.seed, [actor_id], compiled
        )[0]

    def start_clock(self) -> None:
        """Training starts now: the learner and the first actors are up."""
        self.started = self.evaluator.last_at = self._last_report = time.perf_counter()
        self.link.exchange({})

    @property
    def training_s(self) -> float:
        """Seconds of this attempt's training so far, evaluations left out."""
        return time.perf_counter() - self.started - self.evaluator.seconds

    @property
    def fps(self) -> float:
        """Training frames per second of this attempt (a resumed run's earlier frames are
        not in it)."""
        return (self.counters.frames - self._frames_before) / max(self.training_s, 1e-9)

    def landed(self, stats: dict[str, Any]) -> bool:
        """An update landed: roll the learner back if its updates keep coming out non-finite,
        count, evaluate, log and checkpoint, then report to the run's control actor and take
        the actor count it asks for. True when training is done (solved, or out of frames)."""
        if self.learner.needs_rollback(stats):
            self.learner.roll_back()
        self.sampler.close_batch(stats[M.REJECTIONS])
        for reason in stats[M.REJECTIONS]:
            log.warning("the learner left out a segment: %s", reason)
        record = self._count(stats)
        if self.evaluator.due(self.returns, bool(stats[M.EPISODE_RETURN])):
            record[M.EVAL_RETURN] = self.evaluator(ray.get(self.learner.weights))
        self._log(record)
        self.trackers.log(record)
        self.checkpoints.maybe_save(self.learner)
        self.on_update(record)
        train = self.config.train
        if self.evaluator.solved or self.counters.frames >= train.total_frames:
            return True
        now = time.perf_counter()
        if now - self._last_report >= REPORT_INTERVAL_S or M.EVAL_RETURN in record:
            self._last_report = now
            # Only a changed request resizes: an actor that failed to start is not replaced
            # behind the user's back (see ActorFleet.poll).
            wanted = self.link.exchange(record)
            if wanted is not None and wanted != self.fleet.target:
                self.fleet.resize(wanted)
        return False

    def _count(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Count the update in, and make its metrics line (written by `_log`, after an
        evaluation, or by `close` if the run ends before)."""
        counters = self.counters
        with TERMINATION.held():  # a stop inside would count the update twice, or not at all
            self.returns.extend(stats[M.EPISODE_RETURN])
            self.lengths.extend(stats[M.EPISODE_LENGTH])
            counters.frames += stats[M.BATCH_FRAMES]
            counters.updates += 1
            counters.episodes += len(stats[M.EPISODE_RETURN])
            counters.wall_time_s = round(self._wall_before + time.perf_counter() - self.started, 4)
            self.learner.counted()
            self._unlogged = {
                M.UPDATES: counters.updates,
                M.FRAMES: counters.frames,
                M.WALL_TIME: counters.wall_time_s,
                M.FPS: self.fps,
                **{k: v for k, v in stats.items() if not isinstance(v, list)},
                M.EPISODES: counters.episodes,
                M.EPISODE_RETURN: _mean(self.returns),
                M.EPISODE_LENGTH: _mean(self.lengths),
                # After the round: actors that failed in it are already pending replacements.
                M.ACTORS_LIVE: len(self.fleet.live),
                M.ACTORS_PENDING: self.fleet.pending,
                M.ACTORS_TARGET: self.fleet.target,
                **counters.faults(),
            }
        return self._unlogged

    def _log(self, record: dict[str, Any]) -> None:
        """Write a counted update's metrics line."""
        with TERMINATION.held():
            record[M.UNIX_TIME] = round(time.time(), 3)  # after the evaluation it reports
            self.run_dir.log(record)
            self.record = record
            self._unlogged = None

    def close(self, state: str) -> None:
        """End the run's actors and leave its final state (finished or failed). A failed (or
        stopped) run first saves what was learned, if the learner still answers: with the
        update it was making counted and logged, so the checkpoint's weights are those of its
        counters and metrics."""
        if self.learner is not None and state == "failed":
            self._save_what_was_learned()
        self.run_dir.close()
        model = self.run_dir.path / MODEL_FILE
        self.trackers.finish(state, model if state == "finished" else None)
        if self.fleet is not None:
            self.fleet.shutdown()
        if self.learner is not None:
            self.learner.kill()
        if self.link is not None:
            self.link.close(self.record, state)

    def _save_what_was_learned(self) -> None:
        if self._unlogged is None:
            try:
                stats = self.learner.uncounted()
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as err:
                # A learner that did not finish its update in time may still finish it before
                # a save asks for its state: that checkpoint would hold weights its counters
                # do not count, after a second wait on a learner that may be hung.
                log.warning(
                    "no final checkpoint: the learner did not finish its last update (%s); "
                    "the latest checkpoint stands",
                    err,
                )
                return
            if stats is not None:
                self._count(stats)
        if self._unlogged is not None:
            self._log(self._unlogged)
        self.checkpoints.save(self.learner, final=True)


def _mean(values: deque) -> float | None:
    return float(np.mean(values)) if values else None
