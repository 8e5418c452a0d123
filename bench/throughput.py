"""CartPole-v1 sync A2C training throughput beside the raw step rate of the same vector env,
in one run.

- raw: gymnasium's native `CartPoleVectorEnv` (what `configs/cartpole.yaml`'s actors step),
  with as many envs as one actor has, random actions drawn in advance, no policy: the rate
  one process on one core can step it, and the same with one process per actor at once (the
  limit for the config's actors on this machine's cores);
- troupe: `configs/cartpole.yaml` (or `--config`) trained for `--frames` frames with no
  stopping target, on a local Ray already up; frames per second of training time.

Medians over seeds, and troupe's rate as a share of each raw rate.

    python -m bench.throughput --seeds 3
    python -m bench.throughput --seeds 3 --set actors.envs_per_actor=512 --frames 4000000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics

from bench.common import add_overrides, raw_step_rate, start_local_ray, train


def raw_rate(config_path: str, overrides=(), seconds: float = 3.0) -> float:
    """Env steps per second of one actor's vector env with random actions, this process."""
    from services.config import load_config

    config = load_config(config_path, overrides)
    return raw_step_rate(config.env, config.actors.envs_per_actor, seconds)


def parallel_raw_rate(config_path: str, overrides, processes: int) -> float:
    """Summed raw rate of `processes` processes stepping at once."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.starmap(raw_rate, [(config_path, overrides)] * processes))


def run_troupe(config_path: str, overrides, seed: int, frames: int) -> float:
    from services.config import load_config

    config = load_config(
        config_path,
        [
            f"seed={seed}",
            f"train.total_frames={frames}",
            "train.target_return=null",
            "train.eval_interval_s=0",
            "train.eval_episodes=1",
            *overrides,
        ],
    )
    return train(config)[0].fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default="configs/cartpole.yaml")
    parser.add_argument("--frames", type=int, default=1_000_000)
    add_overrides(parser, "actors.envs_per_actor=256")
    args = parser.parse_args()

    import ray

    from services.config import load_config

    actors = load_config(args.config, args.overrides).actors
    raw, raw_all, fps = [], [], []
    ray_start = start_local_ray()
    try:
        for seed in range(args.seeds):
            raw.append(raw_rate(args.config, args.overrides))
            raw_all.append(parallel_raw_rate(args.config, args.overrides, actors.num_actors))
            fps.append(run_troupe(args.config, args.overrides, seed, args.frames))
            print(
                f"seed {seed}: raw {raw[-1]:,.0f}/s, raw x{actors.num_actors} "
                f"{raw_all[-1]:,.0f}/s, troupe {fps[-1]:,.0f} frames/s",
                flush=True,
            )
    finally:
        ray.shutdown()
    r, ra, f = (statistics.median(x) for x in (raw, raw_all, fps))
    print(
        f"\n{args.config}: {actors.num_actors} actors x {actors.envs_per_actor} envs x "
        f"{actors.segment_length} steps; medians of {args.seeds} seeds; {os.cpu_count()} cores; "
        f"Ray start {ray_start:.1f}s (not counted)\n"
    )
    print("| what | steps or frames/s | troupe / this |")
    print("| --- | --- | --- |")
    print(f"| raw vector env, 1 process | {r:,.0f} | {f / r:.2f} |")
    print(f"| raw vector env, {actors.num_actors} processes at once | {ra:,.0f} | {f / ra:.2f} |")
    print(f"| troupe sync A2C, training | {f:,.0f} | 1.00 |")


if __name__ == "__main__":
    main()
