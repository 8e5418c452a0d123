"""The learner alone: frames per second it consumes from segments that are already in its
process, for the MLP (CartPole) and the Nature CNN (Pong), split into its parts.

Segments come from one real `RolloutWorker` (random initial weights), so shapes, dtypes and
episode bookkeeping are exactly what actors ship; the learner then updates on the same
batch again and again (each time tagged with its current version, so none is stale). Per
update: transfer (segments to tensors on the device), compute (forward, backward, optimiser
step) and publish (weights copied off the device for the actors). No Ray: the data path's
own cost is `bench.datapath`.

    python -m bench.learner_rate                    # CPU here, CUDA where there is one
    python -m bench.learner_rate --device cpu --cases cartpole pong
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from learner import metrics as M

# name: (config, segments per update, envs per segment, segment length)
CASES = {
    "cartpole": ("configs/cartpole.yaml", 2, 64, 16),
    "cartpole-large": ("configs/cartpole.yaml", 8, 256, 16),
    "pong": ("configs/pong.yaml", 2, 8, 5),
    "pong-large": ("configs/pong.yaml", 8, 16, 5),
}


def make_segments(config, num_segments: int, envs: int, length: int) -> list:
    from actors.rollout import RolloutWorker
    from learner.learner import Learner

    actors = dataclasses.replace(config.actors, envs_per_actor=envs, segment_length=length)
    worker = RolloutWorker(config.env, actors, config.learner.model, seed=0)
    space, action_space = worker.env.single_observation_space, worker.env.single_action_space
    weights = Learner(config.learner, space, action_space).get_weights()
    segments = [worker.sample(weights) for _ in range(num_segments)]
    worker.env.close()
    return segments, space, action_space


def measure(case: str, device: str, seconds: float) -> dict:
    from learner.learner import Learner
    from services.config import load_config

    path, num_segments, envs, length = CASES[case]
    config = load_config(path, [f"learner.device={device}"])
    segments, space, action_space = make_segments(config, num_segments, envs, length)
    learner = Learner(config.learner, space, action_space)
    parts = {"transfer": [], "compute": [], "publish": []}
    frames = sum(s.frames for s in segments)
    updates, start = 0, None
    while start is None or time.perf_counter() - start < seconds:
        batch = [s.replace(policy_version=learner.version) for s in segments]
        stats = learner.update(batch)
        begin = time.perf_counter()
        learner.get_weights()
        publish = time.perf_counter() - begin
        updates += 1
        if updates == 3:  # warm-up (allocator, kernels) done
            start = time.perf_counter()
        elif updates > 3:
            parts["transfer"].append(stats[M.TRANSFER_TIME])
            parts["compute"].append(stats[M.COMPUTE_TIME])
            parts["publish"].append(publish)
    elapsed = time.perf_counter() - start
    timed = updates - 3
    return {
        "case": case,
        "device": str(learner.device),
        "frames_per_update": frames,
        "updates": timed,
        "fps": frames * timed / elapsed,
        **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in parts.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed per case")
    args = parser.parse_args()

    rows = [measure(case, args.device, args.seconds) for case in args.cases]
    print(
        "| case | device | frames/update | frames/s | transfer ms | compute ms | publish ms |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        print(
            f"| {r['case']} | {r['device']} | {r['frames_per_update']:,} | {r['fps']:,.0f} "
            f"| {r['transfer_ms']:.2f} | {r['compute_ms']:.2f} | {r['publish_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
