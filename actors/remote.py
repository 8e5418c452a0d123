"""Rollout workers as Ray actors: a thin wrapper around `RolloutWorker`."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import ray

from actors.config import ActorConfig, EnvConfig
from actors.rollout import EnvCrashed, RolloutWorker
from learner.config import ModelConfig
from learner.core import PolicyWeights, Segment


class RolloutActor:
    """Ray-facing surface of `RolloutWorker`. Weights arrive as an ObjectRef argument, which
    Ray resolves (zero-copy numpy) before `sample` runs."""

    def __init__(
        self,
        env_config: EnvConfig,
        actor_config: ActorConfig,
        model_config: ModelConfig,
        actor_id: int,
        seed: int,
    ) -> None:
        self.worker = RolloutWorker(env_config, actor_config, model_config, actor_id, seed)
        # A CNN policy runs in torch: one thread, as several actors share the node's cores.
        # (An MLP policy runs in numpy and this process never imports torch.)
        if (torch := sys.modules.get("torch")) is not None:
            torch.set_num_threads(1)

    # No task events: Ray's GCS would keep a record of each of these calls, dozens a second
    # for as long as the run lasts (see bench/soak.py).
    @ray.method(num_returns=2, enable_task_events=False)
    def sample(self, weights: PolicyWeights) -> tuple[Segment | None, int | EnvCrashed]:
        """(segment, its frame count). The driver waits on the small second object to learn
        that a segment is ready, or that sampling failed, without fetching the segment.

        An env that raised has been rebuilt in place, so the actor lives on: that is a
        result, (None, the crash), not an error that would have the actor replaced."""
        try:
            segment = self.worker.sample(weights)
        except EnvCrashed as crash:
            return None, crash
        return segment, segment.length * segment.num_envs

    def ready(self) -> bool:
        """The readiness ping: answers (True) once the actor is up, its envs built and reset,
        so a caller waits on it to know the actor started."""
        return True

    def policy_version(self) -> int:
        """The version of the weights the actor last loaded (-1 before any)."""
        return self.worker.policy.version


def spawn_rollout_actors(
    env_config: EnvConfig,
    actor_config: ActorConfig,
    model_config: ModelConfig,
    seed: int,
    actor_ids: Iterable[int],
) -> list:
    """Start one rollout actor per id, each reserving `actors.num_cpus`."""
    cls = ray.remote(max_restarts=0)(RolloutActor).options(num_cpus=actor_config.num_cpus)
    return [
        cls.remote(env_config, actor_config, model_config, actor_id, seed) for actor_id in actor_ids
    ]
