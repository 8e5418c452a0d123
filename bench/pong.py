"""Pong from pixels: troupe's training frames/s beside Stable-Baselines3's A2C on the same env
and settings, and the raw step rates of the env implementations, in one run.

- raw: random actions on 16 envs with the Atari preprocessing, no policy: ALE's native C++
  vector env (what configs/pong.yaml uses) and gymnasium's AtariPreprocessing and
  FrameStackObservation wrappers in a SyncVectorEnv (what SB3's AtariWrapper resembles);
- troupe: configs/pong.yaml (2 actors x 8 envs x 5 steps, Nature CNN, RMSprop) for
  `--frames` frames; training frames per second of training time (its evaluation excluded);
- sb3: A2C('CnnPolicy') on PongNoFrameskip-v4 with SB3's AtariWrapper and 4 stacked frames,
  16 envs, n_steps 5 and the zoo's Pong settings, for the same frames.

Frames are agent steps (4 emulator frames each). Medians over seeds, and the ratios.

    pip install -e '.[atari,bench]'
    python -m bench.pong --seeds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import raw_step_rate, start_local_ray, train

CONFIG = "configs/pong.yaml"
ENVS = 16


def raw_rate(vectorization: str, seconds: float) -> float:
    """Env steps per second with random actions, on `ENVS` envs in this process."""
    from services.config import load_config

    config = load_config(CONFIG, [f"env.vectorization={vectorization}"]).env
    return raw_step_rate(config, ENVS, seconds)


def run_troupe(seed: int, frames: int) -> dict:
    from services.config import load_config

    config = load_config(
        CONFIG,
        [f"seed={seed}", f"train.total_frames={frames}", "train.eval_episodes=1"],
    )
    result = train(config)[0]
    return {"fps": result.fps, "frames": result.frames, "startup": result.startup_s}


def run_sb3(seed: int, frames: int) -> dict:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    begin = time.perf_counter()
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=ENVS, seed=seed), 4)
    model = A2C(
        "CnnPolicy",
        env,
        ent_coef=0.01,
        vf_coef=0.25,
        policy_kwargs={"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    start = time.perf_counter()
    model.learn(total_timesteps=frames)
    training = time.perf_counter() - start
    env.close()
    return {"fps": model.num_timesteps / training, "frames": model.num_timesteps,
            "startup": start - begin}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40_000, help="frames per run")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()

    raw = {v: raw_rate(v, args.raw_seconds) for v in ("native", "sync")}
    print("raw steps/s", {k: round(v) for k, v in raw.items()}, flush=True)

    import ray

    start_local_ray()
    results: dict[str, list[dict]] = {"troupe": [], "sb3": []}
    try:
        for seed in range(args.seeds):
            results["troupe"].append(run_troupe(seed, args.frames))
            print("troupe", seed, results["troupe"][-1], flush=True)
    finally:
        ray.shutdown()
    if not args.skip_sb3:
        for seed in range(args.seeds):
            results["sb3"].append(run_sb3(seed, args.frames))
            print("sb3   ", seed, results["sb3"][-1], flush=True)

    fps = {k: statistics.median(r["fps"] for r in v) for k, v in results.items() if v}
    print(
        f"\nPong, {args.frames:,} frames a run, medians of {args.seeds} seeds; "
        f"{os.cpu_count()} cores, no GPU\n"
    )
    print("| what | steps or frames/s | vs native raw |\n| --- | --- | --- |")
    rows = {
        "raw env, ALE native vector (C++)": raw["native"],
        "raw env, gymnasium wrappers (sync)": raw["sync"],
        "troupe sync A2C, training": fps["troupe"],
    }
    if "sb3" in fps:
        rows["SB3 A2C, training"] = fps["sb3"]
    for name, rate in rows.items():
        print(f"| {name} | {rate:,.0f} | {rate / raw['native']:.2f} |")
    if "sb3" in fps:
        print(f"\ntroupe / SB3 frames/s: x{fps['troupe'] / fps['sb3']:.2f}")


if __name__ == "__main__":
    main()
