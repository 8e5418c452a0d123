"""Learning table: each shipped config trained with several seeds, beside rl-baselines3-zoo's
published A2C results for the same envs.

Per run: the config as shipped (its frame budget, its stopping target if it has one), on one
local Ray started here. After training, the final policy is evaluated on fresh episodes the
run never saw (20, or the config's `eval_episodes` if more; greedy or sampled as the config
says). Per config the table gives the mean and spread of those final returns over seeds, the
median frames trained and the median wall-clock seconds (start-up, training and the run's own
evaluations; Ray's start is printed, not counted).

    python -m bench.learning --seeds 3                       # classic control
    python -m bench.learning --seeds 3 --configs halfcheetah  # pip install -e '.[mujoco]'
    python -m bench.learning --seeds 3 --configs pong         # '.[atari]'; 10M frames a seed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np

from bench.common import add_overrides, start_local_ray, train

# rl-baselines3-zoo's A2C benchmark (its benchmark.md): mean return and the frames trained.
ZOO_A2C = {
    "CartPole-v1": (500.0, 500_000),
    "Pendulum-v1": (-163.0, 1_000_000),
    "HalfCheetah": (3041.0, 1_000_000),
    "Pong": (17.3, 10_000_000),
}
CONFIGS = {
    "cartpole": "configs/cartpole.yaml",
    "cartpole_async": "configs/cartpole_async.yaml",
    "pendulum": "configs/pendulum.yaml",
    "halfcheetah": "configs/halfcheetah.yaml",
    "pong": "configs/pong.yaml",
}
CLASSIC = ("cartpole", "cartpole_async", "pendulum")
FINAL_EPISODES = 20


def zoo_entry(env_id: str) -> tuple[float, int] | None:
    for name, entry in ZOO_A2C.items():
        if name in env_id:
            return entry
    return None


def train_and_evaluate(path: str, seed: int, overrides: list[str]) -> dict:
    """One run of a shipped config on the connected Ray, then an independent evaluation of
    its final policy."""
    from actors.evaluate import evaluate
    from services.config import load_config

    config = load_config(path, [f"seed={seed}", *overrides])
    result, elapsed, _, weights = train(config)
    episodes = max(FINAL_EPISODES, config.train.eval_episodes)
    returns = evaluate(
        config.env,
        config.learner.model,
        weights,
        episodes,
        seed=100_000 + seed,  # episodes the run's own evaluations never saw
        deterministic=config.train.deterministic_eval,
    )
    return {
        "seed": seed,
        "env": config.env.id,
        "final_return": float(np.mean(returns)),
        "final_return_std": float(np.std(returns)),
        "solved": result.solved,
        "target": config.train.target_return,
        "frames": result.frames,
        "seconds": elapsed,
        "fps": result.fps,
    }


def table(results: dict[str, list[dict]]) -> str:
    rows = [
        "| config | env | seeds | final return (mean ± sd over seeds) | frames (median) "
        "| wall s (median) | frames/s (median) | zoo A2C |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        finals = [r["final_return"] for r in runs]
        env = runs[0]["env"].rpartition(":")[2]
        zoo = zoo_entry(env)
        zoo_text = f"{zoo[0]:g} at {zoo[1] / 1e6:g}M" if zoo else "-"
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        rows.append(
            f"| {name} | {env} | {len(runs)} | {statistics.mean(finals):.1f} ± {spread:.1f} "
            f"| {statistics.median(r['frames'] for r in runs):,.0f} "
            f"| {statistics.median(r['seconds'] for r in runs):.0f} "
            f"| {statistics.median(r['fps'] for r in runs):,.0f} | {zoo_text} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CLASSIC))
    add_overrides(parser, "train.total_frames=200000")
    parser.add_argument("--out", help="also write every run's figures to this JSON file")
    args = parser.parse_args()

    import ray

    ray_start = start_local_ray()
    results: dict[str, list[dict]] = {}
    try:
        for name in args.configs:
            for seed in range(args.seeds):
                run = train_and_evaluate(CONFIGS[name], seed, args.overrides)
                results.setdefault(name, []).append(run)
                print(name, run, flush=True)
    finally:
        ray.shutdown()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(
        f"\nFinal policies on {FINAL_EPISODES}+ fresh episodes, {args.seeds} seeds; "
        f"{os.cpu_count()} cores; Ray start {ray_start:.1f}s (not counted)\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
