"""Evaluating a policy: a batch of fresh episodes, one per env copy."""

from __future__ import annotations

import numpy as np

from actors.config import EnvConfig
from actors.envs import make_vector_env
from actors.policy import ActorPolicy
from learner.config import ModelConfig
from learner.core import PolicyWeights

DEFAULT_SEED = 12345
"""Seed of the envs and the policy's sampling when the caller names none: fixed, so an
evaluation repeats. Training's evaluations and `troupe eval` pass their own."""
MAX_STEPS = 1_000_000
"""Steps after which an evaluation gives up: a guard against envs without a time limit."""


def evaluate(
    env_config: EnvConfig,
    model_config: ModelConfig,
    weights: PolicyWeights,
    episodes: int,
    seed: int = DEFAULT_SEED,
    deterministic: bool = True,
    max_steps: int = MAX_STEPS,
) -> np.ndarray:
    """Returns of `episodes` episodes, run in parallel in one vector env.

    Each env copy contributes exactly its first episode, so no copy's short episodes crowd out
    long ones. `max_steps` guards against envs without a time limit.
    """
    env = make_vector_env(env_config, episodes)
    try:
        policy = ActorPolicy(
            model_config, env.single_observation_space, env.single_action_space, seed
        )
        policy.load(weights)
        obs, _ = env.reset(seed=seed)
        # As the rollout worker does: pixels stay uint8, the rest is float32.
        dtype = np.uint8 if env.single_observation_space.dtype == np.uint8 else np.float32
        running = np.zeros(episodes, dtype=np.float64)
        finished = np.full(episodes, np.nan)
        for _ in range(max_steps):
            obs = np.asarray(obs, dtype=dtype)
            actions = policy.act_greedy(obs) if deterministic else policy.act(obs)[0]
            obs, reward, terminated, truncated, _ = env.step(policy.to_env(actions))
            open_ = np.isnan(finished)
            running += np.where(open_, reward, 0.0)
            done = open_ & (terminated | truncated)
            finished[done] = running[done]
            if not np.isnan(finished).any():
                return finished
        raise RuntimeError(f"evaluation of {env_config.id} ran {max_steps} steps without ending")
    finally:
        env.close()
