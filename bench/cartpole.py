"""CartPole-v1: troupe's sync A2C beside Stable-Baselines3's A2C, in one invocation.

Each system trains with each seed until its greedy policy's mean return over 20 fresh
evaluation episodes reaches 475 in 3 evaluations in a row, one update apart (troupe's
`train.target_streak`: one passing evaluation alone can be luck). Both evaluate the same way:
20 envs, one episode each, every `--eval-interval` seconds of training and whenever an
episode ends while the last 100 training episodes average >= 475. Per system, medians over
seeds:

- frames/s: training frames per second of training time;
- train s: seconds of training to the last passing evaluation, evaluation time excluded;
- startup s: before training (troupe: spawning the learner and actor processes until all are
  ready; SB3: building its envs and model);
- total s: startup, training and evaluations;
- frames: frames trained when solved;

and the ratios troupe / SB3. troupe runs on a local Ray that is already up (its start time is
printed, not counted). SB3 uses the rl-baselines3-zoo A2C settings for CartPole-v1 (8 envs,
n_steps 5, RMSprop 7e-4, zoo budget 500k frames).

    pip install -e '.[bench]'
    python -m bench.cartpole --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import deque

import numpy as np

from bench.common import start_local_ray, train

TARGET = 475.0
STREAK = 3  # passing evaluations in a row, as in configs/cartpole.yaml


def run_troupe(
    seed: int, config_path: str, budget: int, eval_interval: float, overrides=()
) -> dict:
    """One troupe run on the connected Ray, in this process, with the loop its config's
    `algo.mode` picks."""
    from services.config import load_config

    config = load_config(
        config_path,
        [
            f"seed={seed}",
            f"train.total_frames={budget}",
            f"train.eval_interval_s={eval_interval}",
            f"train.target_return={TARGET}",
            f"train.target_streak={STREAK}",
            *overrides,
        ],
    )
    result, elapsed, lines, _ = train(config)
    lags = [x["policy/lag_mean"] for x in lines if x.get("policy/lag_mean") is not None]
    return {
        "lag": statistics.mean(lags) if lags else 0.0,
        "solved": result.solved,
        "seconds": result.wall_time_s - result.eval_time_s,
        "startup": result.startup_s,
        "total": elapsed,
        "frames": result.frames,
        "fps": result.fps,
    }


def run_sb3(seed: int, budget: int, eval_interval: float) -> dict:
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.logger import Logger

    class SolveCallback(BaseCallback):
        """troupe's stopping rule: evaluate every `eval_interval` seconds of training and
        whenever an episode ends while the last 100 training episodes average >= 475; stop
        after STREAK passing evaluations in a row, one update apart."""

        def __init__(self, eval_env) -> None:
            super().__init__()
            self.eval_env = eval_env
            self.last_eval = time.perf_counter()
            self.eval_time = 0.0
            self.streak = 0
            self.first_pass: float | None = None  # wall clock of the first passing evaluation
            self.first_pass_frames = 0
            self.window: deque[float] = deque(maxlen=100)

        def _evaluate(self) -> None:
            now = time.perf_counter()
            mean, _ = evaluate_policy(self.model, self.eval_env, 20, deterministic=True)
            self.last_eval = time.perf_counter()
            self.eval_time += self.last_eval - now
            self.streak = self.streak + 1 if mean >= TARGET else 0
            if self.streak and self.first_pass is None:
                self.first_pass, self.first_pass_frames = time.time(), self.model.num_timesteps

        def _on_step(self) -> bool:
            ended = [i["episode"]["r"] for i in self.locals.get("infos", []) if "episode" in i]
            self.window.extend(ended)
            hot = bool(ended) and len(self.window) >= 20 and np.mean(self.window) >= TARGET
            if not self.streak and (hot or time.perf_counter() - self.last_eval >= eval_interval):
                self._evaluate()
            return self.streak < STREAK

        def _on_rollout_start(self) -> None:
            if 0 < self.streak < STREAK:  # confirm on the policy after the next update
                self._evaluate()

    begin = time.perf_counter()
    torch.manual_seed(seed)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    # 20 envs, one episode each: evaluation costs what troupe's vectorised evaluation costs.
    eval_env = make_vec_env("CartPole-v1", n_envs=20, seed=seed + 1000)
    model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu", verbose=0)
    model.set_logger(Logger(folder=None, output_formats=[]))  # no log folders left in /tmp
    callback = SolveCallback(eval_env)
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=callback)
    end = time.perf_counter()
    training = end - start - callback.eval_time
    return {
        "solved": callback.streak >= STREAK,
        "seconds": training,
        "startup": start - begin,
        "total": end - begin,
        "frames": model.num_timesteps,
        "fps": model.num_timesteps / training,
        "first_pass": callback.first_pass or float("nan"),
        "first_pass_frames": callback.first_pass_frames,
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
    parser.add_argument("--eval-interval", type=float, default=0.5)
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()

    import ray

    ray_start = start_local_ray()
    results: dict[str, list[dict]] = {"troupe": [], "sb3": []}
    try:
        for seed in range(args.seeds):
            results["troupe"].append(run_troupe(seed, args.config, args.budget, args.eval_interval))
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
        f"\nCartPole-v1 to a mean greedy return >= {TARGET:.0f} over 20 episodes; medians of "
        f"{args.seeds} seeds; {os.cpu_count()} cores; Ray start {ray_start:.1f}s (not counted)"
    )
    head = ("system", "solved", "frames/s", "train s", "startup s", "total s", "frames")
    print("{:8} {:>7} {:>10} {:>8} {:>10} {:>8} {:>10}".format(*head))
    for name, runs in results.items():
        if runs:
            solved = f"{sum(r['solved'] for r in runs)}/{len(runs)}"
            print(
                f"{name:8} {solved:>7} {_median(runs, 'fps'):>10,.0f} "
                f"{_median(runs, 'seconds'):>8.1f} {_median(runs, 'startup'):>10.1f} "
                f"{_median(runs, 'total'):>8.1f} {_median(runs, 'frames'):>10,.0f}"
            )
    if results["sb3"]:
        t, s = results["troupe"], results["sb3"]
        print(
            f"troupe / sb3: frames/s x{_median(t, 'fps') / _median(s, 'fps'):.1f}; "
            f"training seconds to solve x{_median(t, 'seconds') / _median(s, 'seconds'):.2f}; "
            f"total seconds x{_median(t, 'total') / _median(s, 'total'):.2f}"
        )


if __name__ == "__main__":
    main()
