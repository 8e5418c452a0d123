"""The acting copy of the policy: CPU, batched, no autograd."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from learner.config import ModelConfig
from learner.core import PolicyWeights
from learner.model import build_model, load_numpy_state


class ActorPolicy:
    """Samples actions for a batch of observations with the newest weights it was given."""

    def __init__(
        self,
        config: ModelConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int,
    ) -> None:
        self.model = build_model(config, observation_space, action_space)
        self.model.requires_grad_(False)
        self.rng = np.random.default_rng(seed)
        self.version = -1

    def load(self, weights: PolicyWeights) -> None:
        """Adopt `weights` unless they are the version already loaded."""
        if weights.version != self.version:
            load_numpy_state(self.model, weights.params)
            self.version = weights.version

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs [B, *O] -> (actions [B] int64, log pi(a|s) [B] float32), sampled.

        The network runs in torch; the categorical draw runs in numpy (inverse CDF), which
        costs a few microseconds on small batches where torch's per-op overhead dominates.
        """
        with torch.inference_mode():
            logits = self.model.policy_logits(torch.from_numpy(obs)).numpy()
        z = logits - logits.max(axis=1, keepdims=True)
        logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        cdf = np.exp(logp_all).cumsum(axis=1)
        u = self.rng.random((len(cdf), 1), dtype=np.float32) * cdf[:, -1:]
        actions = np.minimum((u > cdf).sum(axis=1), cdf.shape[1] - 1)
        logp = np.take_along_axis(logp_all, actions[:, None], axis=1)[:, 0]
        return actions.astype(np.int64), logp.astype(np.float32)

    def act_greedy(self, obs: np.ndarray) -> np.ndarray:
        """obs [B, *O] -> the most probable actions [B] int64."""
        with torch.inference_mode():
            return self.model.policy_logits(torch.from_numpy(obs)).argmax(-1).numpy()
