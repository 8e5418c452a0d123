"""What every training loop shares: start-up and teardown of the learner, the actor fleet and
the run's control actor; counting, evaluating, logging and checkpointing each update; the
final model and summary. `SyncA2C` and `AsyncA2C` differ only in how they feed the learner."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.envs import env_spaces
from actors.evaluate import evaluate
from actors.remote import spawn_rollout_actors
from learner import metrics as M
from learner.core import PolicyWeights
from learner.spaces import check_spaces
from services.checkpoint import Checkpoint, Checkpoints
from services.config import RunConfig
from services.fleet import ActorFleet
from services.keeper import LearnerKeeper
from services.registry import RunLink, spawn_control
from services.rounds import Rounds
from services.rundir import RunDir
from services.stopping import TERMINATION

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.25
"""How often the loop reports metrics to its `RunControl` and takes the wanted actor count."""
STARTUP_GRACE_S = 30.0
"""At start, how long to wait for every actor before training with those that are up."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    frames: int
    updates: int
    startup_s: float
    """Seconds from spawning the learner and actors until all were ready (imports, envs)."""
    wall_time_s: float
    """Seconds from ready to the end of training, evaluations included."""
    eval_time_s: float
    """Of `wall_time_s`, the seconds spent evaluating in the driver."""
    fps: float
    """Training frames per second: frames / (wall_time_s - eval_time_s)."""
    policy_version: int
    eval_return: float
    solved: bool
    learner_device: str


def check_run(config: RunConfig):
    """Fail before anything starts if the env is unknown or its spaces are unsupported.

    Returns the env's (observation space, action space)."""
    obs_space, act_space = env_spaces(config.env)
    check_spaces(config.learner.model, obs_space, act_space)
    return obs_space, act_space


class _Tally:
    """Where the training loop stands: counters carried over from a resumed run, the clock
    (evaluation time is kept apart from it) and the evaluation streak."""

    def __init__(self, progress: dict[str, Any], config: RunConfig) -> None:
        self.frames, self.updates, self.episodes = (
            progress[k] for k in ("frames", "updates", "episodes")
        )
        self.wall_before = progress["wall_time_s"]
        self.start = self.last_eval = self.last_report = time.perf_counter()
        self.window: deque[float] = deque(maxlen=config.train.return_window)
        self.eval_s, self.eval_return, self.streak = 0.0, float("nan"), 0
        self.target_actors = config.actors.num_actors
        self.record: dict[str, Any] = {}


class Trainer:
    """Drives one learner and a resizable fleet of rollout actors on a connected Ray cluster.

    Segments go actor -> object store -> learner as ObjectRefs; the learner returns each new
    weights version as one object, whose ref the actors get for their next segments. The run
    registers a named `RunControl` actor; between updates the loop reports its metrics there
    and takes the actor count it should run. Subclasses implement `_train`.
    """

    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        resume: Checkpoint | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.on_update = on_update or (lambda record: None)
        self.run_id = run_dir.path.name
        self.resume = resume
        self.keeper: LearnerKeeper | None = None
        ckpt = config.checkpoint
        self.checkpoints = Checkpoints.for_run(
            run_dir.path, ckpt.storage, ckpt.keep, ckpt.storage_options
        )
        self._progress = dict(
            resume.counters
            if resume
            else {"frames": 0, "updates": 0, "episodes": 0, "wall_time_s": 0.0}
        )
        # (updates, time) of the last checkpoint attempt, which schedules the next; and the
        # updates the newest checkpoint holds.
        self._tried = (self._progress["updates"], time.monotonic())
        self._saved_updates = self._progress["updates"]
        self._evaluations = 0
        self._last_record: dict[str, Any] = {}

    def run(self) -> TrainResult:
        cfg = self.config
        obs_space, act_space = check_run(cfg)
        self.run_dir.write_config(cfg)
        spawned = time.perf_counter()
        link = keeper = fleet = None
        state = "failed"
        try:
            # The learner first: its process takes longest to start (torch), and the rest
            # start while it imports.
            keeper = self.keeper = LearnerKeeper(
                cfg,
                (obs_space, act_space),
                self.checkpoints,
                self.resume.learner if self.resume else None,
            )
            link = RunLink(
                spawn_control(
                    self.run_id, cfg.name, str(self.run_dir.path.resolve()), cfg.actors.num_actors
                )
            )
            fleet = ActorFleet(
                lambda actor_id: spawn_rollout_actors(
                    cfg.env, cfg.actors, cfg.learner.model, cfg.seed, [actor_id]
                )[0],
                cfg.actors.num_actors,
                # Fresh ids on resume: new seeds, not a replay of the first run's episodes.
                first_id=self._progress.get("next_actor_id", 0),
            )
            # Wait for the processes to be up (imports, env construction), so the training
            # clock measures training and start-up is reported on its own.
            device = ray.get(keeper.handle.device.remote())
            _wait_for_actors(fleet)
            result = self._loop(keeper, fleet, link, time.perf_counter() - spawned, device)
            state = "finished"
            return result
        finally:
            if keeper is not None and state == "failed":
                self._save_checkpoint(keeper, fleet, final=True)  # keep what was learned
            self.run_dir.close()
            if fleet is not None:
                fleet.shutdown()
            if keeper is not None:
                keeper.kill()
            if link is not None:
                link.close(self._last_record, state)

    def _loop(self, keeper: LearnerKeeper, fleet: ActorFleet, link, startup_s: float, device):
        link.exchange({})
        tally = _Tally(self._progress, self.config)
        weights_ref = self._train(keeper, fleet, link, tally)
        return self._finish(weights_ref, tally, keeper, fleet, startup_s, device)

    def _train(self, keeper: LearnerKeeper, fleet: ActorFleet, link, tally: _Tally):
        """Sample and update until `_after_update` says stop; returns the final weights' ref."""
        raise NotImplementedError

    def _after_update(
        self,
        stats: dict[str, Any],
        tally: _Tally,
        weights_ref,
        rounds: Rounds,
        keeper: LearnerKeeper,
        fleet: ActorFleet,
        link,
    ) -> bool:
        """Count, evaluate, log and checkpoint one update, and take the wanted actor count.
        True when training is done (solved, or out of frames)."""
        train = self.config.train
        for reason in stats[M.REJECTIONS]:
            log.warning("the learner left out a segment: %s", reason)
        tally.frames += stats[M.BATCH_FRAMES]
        tally.updates += 1
        tally.episodes += len(stats[M.EPISODE_RETURN])
        tally.window.extend(stats[M.EPISODE_RETURN])
        now = time.perf_counter()
        record = {
            M.UPDATES: tally.updates,
            M.FRAMES: tally.frames,
            M.WALL_TIME: round(tally.wall_before + now - tally.start, 4),
            M.FPS: tally.frames / (now - tally.start - tally.eval_s),
            **{k: v for k, v in stats.items() if not isinstance(v, list)},
            M.EPISODES: tally.episodes,
            M.EPISODE_RETURN: float(np.mean(tally.window)) if tally.window else None,
            # After the round: actors that failed in it are already pending replacements.
            M.ACTORS_LIVE: len(fleet.live),
            M.ACTORS_PENDING: fleet.pending,
            M.ACTORS_TARGET: tally.target_actors,
            M.SEGMENTS_DROPPED: rounds.segments_dropped,
            M.ACTOR_START_FAILURES: fleet.failed_starts,
            M.ACTOR_RESTARTS: fleet.restarts,
            M.ENV_REBUILDS: rounds.env_rebuilds,
            M.LEARNER_RESTARTS: keeper.restarts,
            M.ROLLBACKS: keeper.rollbacks,
        }
        if tally.streak or self._should_eval(tally.window, now - tally.last_eval, stats):
            self._evaluate_into(record, tally, ray.get(weights_ref), since=now)
        record[M.UNIX_TIME] = round(time.time(), 3)  # after the evaluation it reports
        with TERMINATION.held():  # the metrics line and the counters agree
            self.run_dir.log(record)
            tally.record = self._last_record = record
            self._progress.update(
                frames=tally.frames,
                updates=tally.updates,
                episodes=tally.episodes,
                wall_time_s=record[M.WALL_TIME],
            )
        self._maybe_checkpoint(keeper, fleet)
        self.on_update(record)
        if tally.streak >= train.target_streak or tally.frames >= train.total_frames:
            return True
        if now - tally.last_report >= REPORT_INTERVAL_S or M.EVAL_RETURN in record:
            # Only a changed request resizes: an actor that failed to start is not replaced
            # behind the user's back (see ActorFleet.poll).
            wanted = link.exchange(record)
            if wanted is not None and wanted != tally.target_actors:
                fleet.resize(wanted)
                tally.target_actors = wanted
            tally.last_report = now
        return False

    def _evaluate_into(self, record: dict, tally: _Tally, weights: PolicyWeights, since: float):
        """Evaluate `weights`, with the time it takes taken out of the training clock."""
        tally.eval_return = self._evaluate(weights)
        tally.last_eval = time.perf_counter()
        tally.eval_s += tally.last_eval - since
        record[M.EVAL_RETURN] = tally.eval_return
        target = self.config.train.target_return
        passed = target is not None and tally.eval_return >= target
        tally.streak = tally.streak + 1 if passed else 0

    def _finish(self, weights_ref, tally: _Tally, keeper, fleet, startup_s: float, device):
        final = ray.get(weights_ref)
        if M.EVAL_RETURN not in tally.record:
            self._evaluate_into({}, tally, final, since=time.perf_counter())
        self.run_dir.save_model(final, tally.frames)
        self._save_checkpoint(keeper, fleet, final=True)
        wall = time.perf_counter() - tally.start
        result = TrainResult(
            run_dir=self.run_dir.path,
            frames=tally.frames,
            updates=tally.updates,
            startup_s=startup_s,
            wall_time_s=wall,
            eval_time_s=tally.eval_s,
            fps=tally.frames / max(wall - tally.eval_s, 1e-9),
            policy_version=final.version,
            eval_return=tally.eval_return,
            solved=tally.streak >= self.config.train.target_streak,
            learner_device=device,
        )
        self.run_dir.write_summary(
            {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        )
        return result

    def _maybe_checkpoint(self, keeper: LearnerKeeper, fleet: ActorFleet) -> None:
        every = self.config.checkpoint
        updates, at = self._tried
        since = self._progress["updates"] - updates
        due_count = every.every_updates and since >= every.every_updates
        due_time = every.every_s and time.monotonic() - at >= every.every_s
        if (due_count or due_time) and keeper.healthy:
            self._save_checkpoint(keeper, fleet)

    def _save_checkpoint(
        self, keeper: LearnerKeeper, fleet: ActorFleet | None, final: bool = False
    ) -> None:
        """Save the learner's state with the run's counters. A final save (the run ends,
        fails or is stopped) is best effort: the learner may be the thing that failed."""
        if final and self._saved_updates == self._progress["updates"]:
            return  # nothing learned since the last save (or at all)
        try:
            state = ray.get(keeper.handle.state.remote(), timeout=30)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as err:
            if not final:
                raise
            log.warning("no final checkpoint: the learner did not answer (%s)", err)
            return
        counters = {**self._progress, "next_actor_id": fleet.next_id if fleet else 0}
        self._tried = (self._progress["updates"], time.monotonic())
        try:
            path = self.checkpoints.save(state, counters, self.config.to_dict())
        except Exception as err:  # storage down or full: train on, try again when next due
            log.error("checkpoint to %s failed: %s", self.checkpoints.location, err)
            return
        self._saved_updates = self._progress["updates"]
        keeper.checkpoint_saved()
        log.info("checkpoint %s", path)

    def _should_eval(self, window: deque, since_eval: float, stats: dict) -> bool:
        """Evaluate on the interval, and as soon as training returns reach the target (the
        greedy policy is then likely to have solved it)."""
        train = self.config.train
        if train.eval_interval_s > 0 and since_eval >= train.eval_interval_s:
            return True
        return (
            train.target_return is not None
            and bool(stats[M.EPISODE_RETURN])
            and len(window) >= min(train.eval_episodes, train.return_window)
            and float(np.mean(window)) >= train.target_return
        )

    def _evaluate(self, weights: PolicyWeights) -> float:
        """Mean return of `eval_episodes` fresh episodes: each evaluation gets its own seeds,
        so a run cannot stop on start states it happens to handle."""
        train = self.config.train
        self._evaluations += 1
        returns = evaluate(
            self.config.env,
            self.config.learner.model,
            weights,
            train.eval_episodes,
            seed=self.config.seed * 1_000_003 + 7919 * self._evaluations,
            deterministic=train.deterministic_eval,
        )
        return float(np.mean(returns))


def _wait_for_actors(fleet: ActorFleet) -> None:
    """Wait for every first actor, up to `STARTUP_GRACE_S`; then train with those that are up
    (the rest stay pending and join when the cluster has room). With none up, keep waiting."""
    began = last_note = time.monotonic()
    while fleet.pending:
        fleet.poll(timeout_s=2.0)
        waited = time.monotonic() - began
        if fleet.live and waited >= STARTUP_GRACE_S:
            log.warning(
                "%d rollout actors still wait for cluster resources; training with %d",
                fleet.pending,
                len(fleet.live),
            )
            return
        if not fleet.live and time.monotonic() - last_note >= STARTUP_GRACE_S:
            last_note = time.monotonic()
            log.warning(
                "no rollout actor has started after %.0fs: the cluster has no free resources "
                "for one (actors.num_cpus each); waiting",
                waited,
            )
