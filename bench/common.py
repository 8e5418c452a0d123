"""What the benchmarks share."""

from __future__ import annotations

import argparse
import os
import time


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """`--set KEY=VALUE` (repeatable) into `args.overrides`, as `troupe train --set` takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"config override for every run, e.g. {example}",
    )


def start_local_ray(num_cpus: int | None = None) -> float:
    """Start a new local Ray for this benchmark (never one a `ray start` left running) with at
    least 4 logical CPUs, so every actor of a shipped config is placed; return its start
    time in seconds, which the benchmarks print but do not count."""
    import ray

    from services.cluster.connection import LOCAL_SYSTEM_CONFIG

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=num_cpus or max(4, os.cpu_count() or 1),
        include_dashboard=False,
        logging_level="WARNING",
        _system_config=LOCAL_SYSTEM_CONFIG,
    )
    return time.perf_counter() - start


def raw_step_rate(env_config, num_envs: int, seconds: float = 3.0) -> float:
    """Env steps per second of `num_envs` envs as an actor builds them (`make_vector_env`),
    stepped in this process with random actions drawn before the clock starts."""
    from actors.envs import make_vector_env

    env = make_vector_env(env_config, num_envs)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(100)]
    try:
        env.reset(seed=0)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for action in actions:
                env.step(action)
            steps += len(actions) * num_envs
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def train(config, on_update=None) -> tuple:
    """Train `config` on the connected Ray in a throwaway run directory (`on_update` sees each
    metrics line as it is logged). Returns (the `TrainResult`, seconds from spawning to the
    end, the metrics lines, the final weights)."""
    import tempfile

    from services.storage.rundir import RunDir
    from services.training import train as train_run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir.create(tmp, config.name)
        start = time.perf_counter()
        result = train_run(config, run_dir, on_update)
        elapsed = time.perf_counter() - start
        return result, elapsed, run_dir.read_metrics(), run_dir.load_model()


def busy_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores: every process of a run
    (driver, learner, actors, Ray's daemons) counts."""
    import psutil

    times = psutil.cpu_times()._asdict()
    idle = times["idle"] + times.get("iowait", 0.0)
    # Linux counts guest time inside user time already.
    busy = sum(v for k, v in times.items() if k not in ("idle", "iowait", "guest", "guest_nice"))
    return busy, busy + idle
