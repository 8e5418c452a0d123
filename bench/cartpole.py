"""CartPole-v1: troupe's sync A2C beside Stable-Baselines3's A2C, in one invocation.

For each system and seed, train until the greedy policy's mean return over 20 evaluation
episodes reaches 475, evaluating the same way in both (every `--eval-interval` seconds of
training, and as soon as the mean of the last 100 training episodes reaches the target), with
the evaluation time counted in. Reports, as medians over seeds, frames/s, seconds to solve
and frames to solve, and the ratios troupe / SB3. troupe's frames/s is its steady rate after
the first update; its `startup` column is the time to that first update (process start-up),
which the seconds to solve include.

    pip install -e '.[bench]'
    python -m bench.cartpole --seeds 3

SB3 uses the rl-baselines3-zoo A2C settings for CartPole-v1 (8 envs, n_steps 5, RMSprop 7e-4).
troupe's clock starts when its run starts (actor and learner processes start inside it) on a
local Ray that is already up; Ray's own start time is printed separately. SB3's clock starts
at `learn()`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import deque

import numpy as np

TARGET = 475.0


def run_troupe(seed: int, config_path: str, budget: int) -> dict:
    from services.config import load_config
    from services.rundir import RunDir
    from services.trainer import SyncA2C

    config = load_config(config_path, [f"seed={seed}", f"train.total_frames={budget}"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = SyncA2C(config, RunDir.create(tmp, config.name)).run()
        elapsed = time.perf_counter() - start
    return {
        "solved": result.solved,
        "seconds": elapsed,
        "startup": result.startup_s,
        "frames": result.frames,
        "fps": result.steady_fps,
    }


def run_sb3(seed: int, budget: int, eval_interval: float) -> dict:
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    class SolveCallback(BaseCallback):
        def __init__(self, eval_env) -> None:
            super().__init__()
            self.eval_env = eval_env
            self.last_eval = time.perf_counter()
            self.solved = False
            self.seen = 0
            self.window: deque[float] = deque(maxlen=100)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.window.append(info["episode"]["r"])
            now = time.perf_counter()
            hot = len(self.window) >= 20 and np.mean(self.window) >= TARGET
            if hot or now - self.last_eval >= eval_interval:
                self.last_eval = now
                mean, _ = evaluate_policy(self.model, self.eval_env, 20, deterministic=True)
                self.solved = mean >= TARGET
            return not self.solved

    torch.manual_seed(seed)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    # 20 envs, one episode each: evaluation costs what troupe's vectorised evaluation costs.
    eval_env = make_vec_env("CartPole-v1", n_envs=20, seed=seed + 1000)
    model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu", verbose=0)
    callback = SolveCallback(eval_env)
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=callback)
    elapsed = time.perf_counter() - start
    return {
        "solved": callback.solved,
        "seconds": elapsed,
        "startup": 0.0,
        "frames": model.num_timesteps,
        "fps": model.num_timesteps / elapsed,
    }


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default="configs/cartpole.yaml")
    parser.add_argument(
        "--budget",
        type=int,
        default=500_000,
        help="frames per run at most (the zoo's CartPole budget)",
    )
    parser.add_argument("--eval-interval", type=float, default=2.0)
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()

    import ray

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=max(4, os.cpu_count() or 1),
        include_dashboard=False,
        logging_level="WARNING",
    )
    ray_start = time.perf_counter() - start
    results: dict[str, list[dict]] = {"troupe": [], "sb3": []}
    try:
        for seed in range(args.seeds):
            results["troupe"].append(run_troupe(seed, args.config, args.budget))
            print("troupe", seed, results["troupe"][-1], flush=True)
    finally:
        ray.shutdown()
    if not args.skip_sb3:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            raise SystemExit("stable-baselines3 is missing: pip install -e '.[bench]'") from None
        for seed in range(args.seeds):
            results["sb3"].append(run_sb3(seed, args.budget, args.eval_interval))
            print("sb3   ", seed, results["sb3"][-1], flush=True)

    print(
        f"\nCartPole-v1 to mean greedy return >= {TARGET:.0f} over 20 episodes, "
        f"{args.seeds} seeds, medians; {os.cpu_count()} cores; Ray start {ray_start:.1f}s"
    )
    print(
        f"{'system':8} {'solved':>7} {'frames/s':>10} {'seconds':>8} {'startup':>8} {'frames':>10}"
    )
    for name, runs in results.items():
        if runs:
            solved = sum(r["solved"] for r in runs)
            print(
                f"{name:8} {solved:>4}/{len(runs):<2} {_median(runs, 'fps'):>10,.0f} "
                f"{_median(runs, 'seconds'):>8.1f} {_median(runs, 'startup'):>8.1f} "
                f"{_median(runs, 'frames'):>10,.0f}"
            )
    if results["sb3"]:
        t, s = results["troupe"], results["sb3"]
        print(
            f"ratio troupe/sb3: frames/s x{_median(t, 'fps') / _median(s, 'fps'):.1f}, "
            f"seconds to solve x{_median(t, 'seconds') / _median(s, 'seconds'):.2f}"
        )


if __name__ == "__main__":
    main()
