"""A training run from start to end: start its parts, wait for them, run the loop of its
`algo.mode`, then evaluate, save and summarise the final model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import ray

from actors.envs import env_spaces
from learner import metrics as M
from learner.spaces import check_spaces
from services.config import RunConfig
from services.storage.checkpoints import Checkpoint
from services.storage.rundir import RunDir
from services.tracking.trackers import check_packages
from services.training.async_loop import train_async
from services.training.parts import OnUpdate, RunParts
from services.training.sync_loop import train_sync

STARTUP_GRACE_S = 30.0
"""At start, how long to wait for every actor before training with those that are up."""

LOOPS = {"sync": train_sync, "async": train_async}
"""The training loop of each `algo.mode`."""


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
    """Training frames per second of this attempt: its frames / (wall - eval time)."""
    policy_version: int
    eval_return: float
    solved: bool
    learner_device: str


def check_run(config: RunConfig):
    """Fail before anything starts if the env is unknown, its spaces are unsupported or a
    tracker the config names is not installed.

    Returns the env's (observation space, action space)."""
    obs_space, act_space = env_spaces(config.env)
    check_spaces(config.learner.model, obs_space, act_space)
    check_packages(config.logging)
    return obs_space, act_space


def train(
    config: RunConfig,
    run_dir: RunDir,
    on_update: OnUpdate | None = None,
    resume: Checkpoint | None = None,
) -> TrainResult:
    """Train on the connected Ray cluster until the run is solved or out of frames; the run's
    files go to `run_dir`. `on_update` sees each update's metrics line. A run that fails or is
    stopped (SIGTERM) saves a final checkpoint first."""
    spaces = check_run(config)
    spawned = time.perf_counter()
    run = RunParts(config, run_dir, spaces, resume, on_update)
    # Once the run holds its id on the cluster: a second driver of the same run id is
    # refused (RunConflict) before it touches the live run's files.
    run_dir.write_config(config)
    state = "failed"
    try:
        # Wait for the processes to be up (imports, env construction), so the training clock
        # measures training and start-up is reported on its own.
        device = run.learner.device()
        run.fleet.wait_for_start(STARTUP_GRACE_S)
        startup_s = time.perf_counter() - spawned
        run.start_clock()
        LOOPS[config.algo.mode](run)
        result = _finish(run, startup_s, device)
        state = "finished"
        return result
    finally:
        run.close(state)


def _finish(run: RunParts, startup_s: float, device: str) -> TrainResult:
    """Evaluate the final weights (unless the last update just did), save them as the run's
    model with a last checkpoint, and write the summary."""
    final = ray.get(run.learner.weights)
    evaluator = run.evaluator
    if M.EVAL_RETURN not in run.record:
        evaluator(final)
    run.run_dir.save_model(final, run.counters.frames)
    run.checkpoints.save(run.learner, final=True)
    result = TrainResult(
        run_dir=run.run_dir.path,
        frames=run.counters.frames,
        updates=run.counters.updates,
        startup_s=startup_s,
        wall_time_s=time.perf_counter() - run.started,
        eval_time_s=evaluator.seconds,
        fps=run.fps,
        policy_version=final.version,
        eval_return=evaluator.last_return,
        solved=evaluator.solved,
        learner_device=device,
    )
    run.run_dir.write_summary(
        {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
    )
    return result
