"""Small batches: troupe's frames/s beside Stable-Baselines3's A2C at the same envs x steps,
and where each update's time goes, in one run.

Settings (troupe's rounds as a compiled graph, and as plain actor calls):

- cartpole-16x5: CartPole-v1, one actor of 16 envs x 5 steps (80 frames an update: the seed
  document's A2C), sync, and async;
- pendulum-8x8: configs/pendulum.yaml (rl-baselines3-zoo's 8 envs x 8 steps, gSDE);
- cartpole-large: configs/cartpole.yaml (2 actors x 64 envs x 16 steps, 2,048 frames);
- slow-env: CartPole whose every step sleeps 5 ms (a simulator that takes time, as
  bench.envs.SlowCartPole), 2 actors x 4 envs x 16 steps: the actors' env time dominates.

SB3 runs the same env with the same envs x steps in a fresh process (Pendulum with gSDE and
VecNormalize, as the zoo). Per troupe row, from the run's metrics lines after the first
tenth of its updates (medians): wall ms per update, the actor's env stepping and action
time for its segment, the learner's update time, and the overhead: wall per update minus
those (in async mode sampling overlaps the update, so it can come out negative); and the
CPU cores the whole machine kept busy over the same stretch (driver, learner, actors, Ray's
daemons; psutil), which shows what waiting costs: a compiled graph's idle participants
wait by spinning.

    pip install -e '.[bench]'
    python -m bench.small_batch
    python -m bench.small_batch --only cartpole-16x5 --frames 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from itertools import pairwise

from bench.common import busy_cpu_s, start_local_ray, train
from bench.envs import SLOW_CARTPOLE_ID

SMALL = ["actors.num_actors=1", "actors.envs_per_actor=16", "actors.segment_length=5"]
SETTINGS = {
    # name: (config, overrides, SB3's (env id, envs, steps, zoo extras), frames scale)
    "cartpole-16x5": ("configs/cartpole.yaml", SMALL, ("CartPole-v1", 16, 5, False), 1),
    "pendulum-8x8": ("configs/pendulum.yaml", [], ("Pendulum-v1", 8, 8, True), 1),
    "cartpole-large": (
        "configs/cartpole.yaml",
        ["actors.envs_per_actor=64"],
        ("CartPole-v1", 128, 16, False),
        10,
    ),
    "slow-env": (
        "configs/cartpole.yaml",
        [f"env.id={SLOW_CARTPOLE_ID}", "actors.envs_per_actor=4"],
        (SLOW_CARTPOLE_ID, 8, 16, False),
        0.1,
    ),
}
VARIANTS = {
    "cartpole-16x5": {
        "compiled": [],
        "plain": ["train.compiled_graph=false"],
        "async": ["algo.mode=async"],
    },
    "pendulum-8x8": {"compiled": [], "plain": ["train.compiled_graph=false"]},
    "cartpole-large": {"compiled": [], "plain": ["train.compiled_graph=false"]},
    "slow-env": {"compiled": [], "plain": ["train.compiled_graph=false"]},
}
CPU_SAMPLE_EVERY = 10
"""Updates between two reads of the machine's CPU counters."""


def run_troupe(config_path: str, overrides: list[str], frames: int) -> dict:
    from services.config import load_config

    config = load_config(
        config_path,
        [
            f"train.total_frames={frames}",
            "train.target_return=null",
            "train.eval_interval_s=0",
            "train.eval_episodes=1",
            *overrides,
        ],
    )
    cpu = []  # (updates, busy, total) now and then

    def sample(line: dict) -> None:
        if line["perf/updates"] % CPU_SAMPLE_EVERY == 0:
            cpu.append((line["perf/updates"], *busy_cpu_s()))

    result, _, lines, _ = train(config, sample)
    steady = lines[len(lines) // 10 :]
    window = [c for c in cpu if c[0] >= steady[0]["perf/updates"]]
    cores = float("nan")  # a run too short for two samples: more --frames
    if len(window) >= 2:
        (_, busy0, total0), (_, busy1, total1) = window[0], window[-1]
        cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1e-9)
    walls = [b["perf/wall_time_s"] - a["perf/wall_time_s"] for a, b in pairwise(steady)]

    def ms(key: str) -> float:
        return 1e3 * statistics.median(line[key] for line in steady if key in line)

    wall = 1e3 * statistics.median(walls)
    env, policy, update = (
        ms("perf/actor_env_s"),
        ms("perf/actor_policy_s"),
        ms("perf/update_time_s"),
    )
    return {
        "fps": result.fps,
        "wall_ms": wall,
        "env_ms": env,
        "policy_ms": policy,
        "update_ms": update,
        "overhead_ms": wall - env - policy - update,
        "cores": cores,
    }


SB3_SCRIPT = """
import json, sys, time
import torch
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

env_id, n_envs, n_steps, zoo, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4] == "1", int(sys.argv[5])
env = make_vec_env(env_id, n_envs=n_envs, seed=0)
kwargs = {}
if zoo:  # rl-baselines3-zoo's A2C for Pendulum-v1
    env = VecNormalize(env, gamma=0.9)
    kwargs = dict(gamma=0.9, gae_lambda=0.9, ent_coef=0.0, max_grad_norm=0.5, vf_coef=0.4,
                  use_sde=True, normalize_advantage=False,
                  policy_kwargs=dict(log_std_init=-2, ortho_init=False))
model = A2C("MlpPolicy", env, n_steps=n_steps, seed=0, verbose=0, **kwargs)
start = time.perf_counter()
model.learn(total_timesteps=frames)
print(json.dumps({"fps": frames / (time.perf_counter() - start)}))
"""


def run_sb3(env_id: str, n_envs: int, n_steps: int, zoo: bool, frames: int) -> dict:
    """SB3's A2C in a fresh process (its own torch threads, as a user would run it)."""
    args = [env_id, str(n_envs), str(n_steps), "1" if zoo else "0", str(frames)]
    out = subprocess.run(
        [sys.executable, "-c", SB3_SCRIPT, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="per small-batch run")
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()
    print(f"ray.init {start_local_ray():.1f}s (not counted)", flush=True)
    rows = []
    for name in args.only or SETTINGS:
        config_path, overrides, (env_id, n_envs, n_steps, zoo), scale = SETTINGS[name]
        frames = int(args.frames * scale)
        sb3 = None
        if not args.skip_sb3:
            # SB3 at large batches steps 128 envs in one Python loop: a tenth of the frames.
            sb3_frames = min(args.frames, frames)
            sb3 = run_sb3(env_id, n_envs, n_steps, zoo, sb3_frames)["fps"]
            print(f"{name} sb3: {sb3:,.0f} frames/s", flush=True)
        for variant, extra in VARIANTS[name].items():
            r = run_troupe(config_path, [*overrides, *extra], frames)
            rows.append((name, variant, r, sb3))
            print(f"{name} {variant}: {json.dumps({k: round(v, 3) for k, v in r.items()})}")
    print()
    print(
        "| setting | troupe | frames/s | SB3 frames/s | ratio | ms/update | env | actions "
        "| update | overhead | CPU cores busy |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, variant, r, sb3 in rows:
        ratio = f"{r['fps'] / sb3:.2f}" if sb3 else "-"
        sb3_text = f"{sb3:,.0f}" if sb3 else "-"
        print(
            f"| {name} | {variant} | {r['fps']:,.0f} | {sb3_text} | {ratio} | "
            f"{r['wall_ms']:.2f} | {r['env_ms']:.2f} | {r['policy_ms']:.2f} | "
            f"{r['update_ms']:.2f} | {r['overhead_ms']:.2f} | {r['cores']:.2f} |"
        )


if __name__ == "__main__":
    main()
