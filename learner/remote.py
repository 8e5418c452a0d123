"""The learner as a Ray actor: a thin wrapper, so the logic stays testable without Ray."""

from __future__ import annotations

import time

import ray

from learner import metrics as M
from learner.config import LearnerConfig
from learner.core import PolicyWeights, Segment


class LearnerActor:
    """Ray-facing surface of `Learner`. Segments arrive as top-level arguments so Ray resolves
    their ObjectRefs; `update` returns (stats, weights) as two objects so the driver can hand
    the weights' ref to every actor without fetching them."""

    def __init__(
        self,
        config: LearnerConfig,
        observation_space,
        action_space,
        seed: int,
        horizon_frames: int = 0,
    ) -> None:
        # Imported here, in the learner's own process: `learner.remote` stays light (no
        # torch) for the processes that only spawn learners or read their config.
        from learner.learner import Learner

        self.learner = Learner(config, observation_space, action_space, seed, horizon_frames)
        self._publish_s = 0.0

    @ray.method(enable_task_events=False)  # called every update: see RolloutActor.sample
    def get_weights(self) -> PolicyWeights:
        return self.learner.get_weights()

    @ray.method(num_returns=2, enable_task_events=False)
    def update(self, *segments: Segment) -> tuple[dict, PolicyWeights]:
        stats = self.learner.update(segments)
        weights = self.publish()
        stats[M.PUBLISH_TIME] = self._publish_s
        return stats, weights

    # The two steps of a compiled round (services/training/compiled.py): the weights go
    # through the graph's channels to the actors, their segments to `learn`.
    def publish(self, _round: object = None) -> PolicyWeights:
        """The newest weights, for a round's actors."""
        start = time.perf_counter()
        weights = self.learner.get_weights()
        self._publish_s = time.perf_counter() - start
        return weights

    def learn(self, *segments: Segment | None) -> dict | None:
        """`update` on the segments that were delivered (None: that actor's env crashed);
        None when there were none."""
        delivered = [s for s in segments if s is not None]
        if not delivered:
            return None
        stats = self.learner.update(delivered)
        stats[M.PUBLISH_TIME] = self._publish_s
        return stats

    def state(self) -> dict:
        return self.learner.state()

    def load_state(self, state: dict) -> int:
        self.learner.load_state(state)
        return self.learner.version

    def device(self) -> str:
        return str(self.learner.device)


def gpus_for(config: LearnerConfig) -> float:
    """GPUs the learner actor asks Ray for: one when the device needs or may use CUDA and the
    cluster has one ('auto'), none otherwise."""
    if config.device == "cpu":
        return 0.0
    if config.device == "auto":
        return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return 1.0


def spawn_learner(
    config: LearnerConfig, observation_space, action_space, seed: int, horizon_frames: int = 0
):
    """Start the learner actor with the resources its config asks for. `horizon_frames`:
    the run's frames, for linear schedules."""
    cls = ray.remote(max_restarts=0)(LearnerActor)
    return cls.options(num_cpus=config.num_cpus, num_gpus=gpus_for(config)).remote(
        config, observation_space, action_space, seed, horizon_frames
    )
