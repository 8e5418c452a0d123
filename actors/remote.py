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
        compiled_graph: bool = False,
    ) -> None:
        self.worker = RolloutWorker(env_config, actor_config, model_config, actor_id, seed)
        self._sampling = False
        if compiled_graph:
            # The first round of a compiled graph imports torch in each of its actors (Ray's
            # channels look for tensors): ~1.5 s that would stall training, taken here at
            # start-up instead.
            import torch
        # A CNN policy runs in torch: one thread, as several actors share the node's cores.
        # (An MLP policy runs in numpy and, without a compiled graph, this process never
        # imports torch.)
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
        self._sampling = True
        try:
            segment = self.worker.sample(weights)
        except EnvCrashed as crash:
            # Without the frames its traceback (and the one it was raised from) holds: they
            # hold this call's weights, which in a compiled graph are a view of a channel's
            # buffer, and a buffer kept alive blocks the learner's writes to it ten rounds on.
            # The trace travels as text.
            crash.__context__ = None
            return None, crash.with_traceback(None)
        finally:
            self._sampling = False
        return segment, segment.length * segment.num_envs

    def sampling(self) -> bool:
        """Whether a `sample` call is under way: how the driver of a compiled round, which
        answers for all its actors at once, finds the one that stalled."""
        return self._sampling

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
    compiled_graph: bool = False,
) -> list:
    """Start one rollout actor per id, each reserving `actors.num_cpus`; `compiled_graph`:
    ready to sample in a compiled graph."""
    cls = ray.remote(max_restarts=0)(RolloutActor).options(num_cpus=actor_config.num_cpus)
    return [
        cls.remote(env_config, actor_config, model_config, actor_id, seed, compiled_graph)
        for actor_id in actor_ids
    ]
