"""The data path: what moving segments and weights through Ray costs, per segment, and how
many actors one learner can serve before it saturates.

Real segments (from one `RolloutWorker`: CartPole float32 vectors, Pong uint8 frames) go
through the real Ray surfaces, `RolloutActor.sample` and `LearnerActor.update`, in the sync
loop's pattern (each actor gets the newest weights' ref, the driver waits on the small
receipts, segment refs go straight to the learner), but the actors return a canned segment
and the learner does no math, so all that is left is the data path: serialising, the object
store, the Ray calls and deserialising. Fitting the round time against the number of actors
k gives a fixed cost per round (the update call, a weights object put once per version) and
a cost per segment. With the learner's own rate (`bench.learner_rate`) and one actor's
sampling rate, both measured here too, it prints a model of the throughput N actors reach.

    python -m bench.datapath
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import ray

from actors.remote import RolloutActor
from bench.common import start_local_ray
from bench.learner_rate import CASES, make_segments
from bench.learner_rate import measure as learner_rate
from learner.core import PolicyWeights
from learner.remote import LearnerActor

ACTOR_COUNTS = (1, 2, 4, 8)


class _CannedWorker:
    """Stands in for `RolloutWorker`: the same segment every time, tagged with the version of
    the weights it was handed (which Ray has resolved into this process)."""

    def __init__(self, segment) -> None:
        self.segment = segment
        self.policy = SimpleNamespace(version=-1)

    def sample(self, weights: PolicyWeights):
        assert weights.params, "weights did not arrive"
        return self.segment.replace(policy_version=weights.version)


class _NullLearner:
    """Stands in for `Learner`: reads every segment's arrays, no math; a new weights version
    (the real parameters' arrays) per update, as the real learner publishes."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.params, self.version = params, 0

    def update(self, segments) -> dict:
        for s in segments:  # touch the zero-copy buffers
            float(s.rewards.sum()), s.obs[-1].flat[0]
        self.version += 1
        return {}

    def get_weights(self) -> PolicyWeights:
        return PolicyWeights(self.version, self.params)


class CannedActor(RolloutActor):
    def __init__(self, segment) -> None:  # no env, no torch model: only the Ray surface
        self.worker = _CannedWorker(segment)


class NullLearnerActor(LearnerActor):
    def __init__(self, params) -> None:
        self.learner = _NullLearner(params)


def round_times(segment, params, counts, rounds: int) -> dict[int, float]:
    """Median seconds of one sync round with k canned actors, per k."""
    learner = ray.remote(NullLearnerActor).options(num_cpus=0).remote(params)
    actor_cls = ray.remote(CannedActor).options(num_cpus=0)
    actors = [actor_cls.remote(segment) for _ in range(max(counts))]
    ray.get([a.ready.remote() for a in actors])
    times = {}
    try:
        for k in counts:
            weights_ref, samples = learner.get_weights.remote(), []
            for i in range(rounds + 5):
                begin = time.perf_counter()
                calls = [a.sample.remote(weights_ref) for a in actors[:k]]
                ray.wait([r for _, r in calls], num_returns=k)
                stats_ref, weights_ref = learner.update.remote(*(s for s, _ in calls))
                ray.get(stats_ref)
                if i >= 5:  # warm-up rounds start the object store's buffers
                    samples.append(time.perf_counter() - begin)
            times[k] = statistics.median(samples)
    finally:
        for handle in (learner, *actors):
            ray.kill(handle)
    return times


def actor_rate(config, envs: int, length: int, seconds: float = 3.0) -> float:
    """Frames per second one actor samples in-process (one torch thread, as in Ray)."""
    import dataclasses

    import torch

    from actors.rollout import RolloutWorker
    from learner.learner import Learner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    actors = dataclasses.replace(config.actors, envs_per_actor=envs, segment_length=length)
    worker = RolloutWorker(config.env, actors, config.learner.model, seed=1)
    space, action_space = worker.env.single_observation_space, worker.env.single_action_space
    weights = Learner(config.learner, space, action_space).get_weights()
    worker.sample(weights)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        frames += worker.sample().frames
    rate = frames / (time.perf_counter() - start)
    worker.env.close()
    torch.set_num_threads(threads)
    return rate


def report(case: str, rounds: int) -> None:
    from services.config import load_config

    path, _, envs, length = CASES[case]
    config = load_config(path)
    segments, space, action_space = make_segments(config, 1, envs, length)
    segment = segments[0]
    from learner.learner import Learner

    params = Learner(config.learner, space, action_space).get_weights().params
    times = round_times(segment, params, ACTOR_COUNTS, rounds)
    ks = np.array(list(times), dtype=float)
    per_round, per_segment = np.polyfit(ks, np.array(list(times.values())), 1)[::-1]
    nbytes = sum(v.nbytes for v in vars(segment).values() if isinstance(v, np.ndarray))
    weight_bytes = sum(v.nbytes for v in params.values())
    frames = segment.frames
    print(
        f"\n## {case}: segment {envs} envs x {length} steps = {frames} frames, {nbytes:,} B; "
        f"weights {weight_bytes:,} B"
    )
    print("| actors k | round ms (canned actors, null learner) | per segment us |")
    print("| --- | --- | --- |")
    for k, t in times.items():
        print(f"| {k} | {1e3 * t:.2f} | {1e6 * t / k:.0f} |")
    print(
        f"fit: {1e6 * per_round:.0f} us per round + {1e6 * per_segment:.0f} us per segment "
        f"({1e3 * per_segment / frames:.2f} us per frame)"
    )

    learner = learner_rate(case, "auto", seconds=3.0)
    sample = actor_rate(config, envs, length)
    # The learner's time per segment once data-path costs are counted; in async mode it is
    # busy all the time, so it saturates at this rate whatever the number of actors.
    learner_per_segment = frames / learner["fps"] + per_segment
    saturated = frames / (learner_per_segment + per_round / 8)  # rounds of 8 segments
    print(
        f"learner alone ({learner['device']}, {learner['frames_per_update']} frames per "
        f"update): {learner['fps']:,.0f} frames/s; one actor samples {sample:,.0f} frames/s"
    )
    print(
        f"model: the learner saturates at ~{saturated:,.0f} frames/s, i.e. "
        f"~{saturated / sample:.1f} actors each on its own core (async, 8 segments per "
        "update); sync, where actors wait for the update and the learner for the slowest "
        "actor:"
    )
    print("| actors N | sync frames/s (model) | learner busy |")
    print("| --- | --- | --- |")
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        busy = per_round + n * learner_per_segment
        round_s = frames / sample + busy
        print(f"| {n} | {n * frames / round_s:,.0f} | {busy / round_s:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", choices=["cartpole", "pong"], default=["cartpole", "pong"]
    )
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds per actor count")
    args = parser.parse_args()
    ray_start = start_local_ray()
    try:
        for case in args.cases:
            report(case, args.rounds)
    finally:
        ray.shutdown()
    print(f"\n(Ray start {ray_start:.1f}s, not counted)")


if __name__ == "__main__":
    main()
