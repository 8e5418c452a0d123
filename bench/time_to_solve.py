"""Seconds from typing the training command to a solved CartPole-v1 policy, whole process
included (Python's start, imports, Ray's start, the actors' start, training), beside
Stable-Baselines3's A2C measured the same way, in one run.

- troupe: `troupe train --config configs/cartpole.yaml`, as a user types it (a new process
  that starts its own local Ray). Solved is the first of its evaluations (20 fresh episodes,
  greedy) with a mean return >= 475, timed by the metrics line's clock; the command itself
  goes on until its config's stricter stopping rule (5 evaluations in a row >= 495) and
  saves the model, which is then evaluated on 20 further episodes it never saw.
- sb3: a new Python process that imports Stable-Baselines3 and trains A2C with the
  rl-baselines3-zoo settings, evaluating the same way (`bench.cartpole.run_sb3`).

Medians over seeds, and the ratio. For where the troupe command's time goes, it also prints
the seconds to its first update (start-up: Python, imports, Ray, learner and actors) and
Ray's own start alone (`ray.init` of a local cluster in a fresh process, as the command
starts it, nothing else).

    python -m bench.time_to_solve --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOLVED = 475.0


def troupe_command() -> list[str]:
    """The installed `troupe` console script beside this Python, else the CLI module."""
    script = Path(sys.executable).with_name("troupe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]


def run_troupe(config: str, seed: int) -> dict:
    from actors.evaluate import evaluate
    from services.config import load_config
    from services.storage.rundir import RunDir

    with tempfile.TemporaryDirectory() as root:
        command = [
            *troupe_command(),
            "train",
            "--config",
            config,
            "--no-progress",
            "--set",
            f"seed={seed}",
            "--set",
            f"train.run_root={root}",
        ]
        start = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
        exit_s = time.time() - start
        (path,) = Path(root).iterdir()
        run_dir = RunDir(path)
        lines = run_dir.read_metrics()
        weights = run_dir.load_model()
    passed = [x for x in lines if (x.get("eval/episode_return") or -np.inf) >= SOLVED]
    first = passed[0] if passed else None
    run = load_config(config)
    final = evaluate(
        run.env, run.learner.model, weights, 20, seed=100_000 + seed, deterministic=True
    )
    return {
        "solved_s": first["perf/unix_time"] - start if first else float("nan"),
        "first_update_s": lines[0]["perf/unix_time"] - start,
        "frames": first["perf/frames"] if first else float("nan"),
        "exit_s": exit_s,
        "final_return": float(np.mean(final)),
    }


_SB3 = """
import json, sys, time
start = float(sys.argv[1])
from bench.cartpole import run_sb3
result = run_sb3(int(sys.argv[2]), 500_000, 0.5)
print(json.dumps({**result, "solved_s": result["first_pass"] - start}))
"""


_RAY_START = """
import sys, time
from services.cluster.connection import ray_connection
from services.config import load_config
config = load_config(sys.argv[1])
start = time.time()
with ray_connection(config):
    print(time.time() - start, flush=True)
"""


def ray_start_s(config: str) -> float:
    """Seconds `troupe train`'s own call (`services.cluster.connection.ray_connection`) takes
    to start a local Ray, in a fresh process that does nothing else."""
    out = subprocess.run(
        [sys.executable, "-c", _RAY_START, config],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return float(out.stdout.strip().splitlines()[-1])


def run_sb3(seed: int) -> dict:
    start = time.time()
    out = subprocess.run(
        [sys.executable, "-c", _SB3, str(start), str(seed)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "solved_s": result["solved_s"],
        "frames": result["first_pass_frames"],
        "exit_s": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default="configs/cartpole.yaml")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()

    results: dict[str, list[dict]] = {"troupe": [], "sb3": []}
    ray_starts = []
    for seed in range(args.seeds):
        ray_starts.append(ray_start_s(args.config))
        print("ray.init", seed, f"{ray_starts[-1]:.2f}s", flush=True)
        results["troupe"].append(run_troupe(args.config, seed))
        print("troupe", seed, results["troupe"][-1], flush=True)
        if not args.skip_sb3:
            results["sb3"].append(run_sb3(seed))
            print("sb3   ", seed, results["sb3"][-1], flush=True)

    print(
        f"\nCartPole-v1, command to first evaluation >= {SOLVED:.0f} (20 episodes); medians "
        f"of {args.seeds} seeds; {os.cpu_count()} cores\n"
    )
    print("| system | s to solved | frames to solved | s to exit |")
    print("| --- | --- | --- | --- |")
    for name, runs in results.items():
        if runs:
            med = {
                k: statistics.median(r[k] for r in runs) for k in ("solved_s", "frames", "exit_s")
            }
            print(
                f"| {name} | {med['solved_s']:.1f} | {med['frames']:,.0f} | {med['exit_s']:.1f} |"
            )
    troupe_start = statistics.median(r["first_update_s"] for r in results["troupe"])
    print(
        f"troupe's first update came {troupe_start:.1f} s after the command; Ray's own start "
        f"alone (ray.init of a local cluster, fresh process): {statistics.median(ray_starts):.1f} s"
    )
    if results["sb3"]:
        t = statistics.median(r["solved_s"] for r in results["troupe"])
        s = statistics.median(r["solved_s"] for r in results["sb3"])
        print(f"troupe / sb3, seconds to solved: x{t / s:.2f}")
    finals = [r["final_return"] for r in results["troupe"]]
    print(f"troupe's saved models on 20 unseen episodes: {', '.join(f'{x:.1f}' for x in finals)}")


if __name__ == "__main__":
    main()
