"""The acting copy of the policy: CPU, batched, no autograd."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from actors.networks import policy_network
from learner.config import ModelConfig
from learner.core import PolicyWeights


class ActorPolicy:
    """Samples actions for a batch of observations with the newest weights it was given."""

    def __init__(
        self,
        config: ModelConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int,
    ) -> None:
        self.network = policy_network(config, observation_space, action_space)
        self.rng = np.random.default_rng(seed)
        self.version = -1
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.gsde = self.continuous and config.exploration == "gsde"
        self.exploration: np.ndarray | None = None  # gSDE: [B, F, A], one matrix per env
        if self.continuous:
            self.low = action_space.low.astype(np.float32)
            self.high = action_space.high.astype(np.float32)
            self.action_shape = action_space.shape
        else:
            self.action_shape = ()

    def load(self, weights: PolicyWeights) -> None:
        """Adopt `weights` unless they are the version already loaded."""
        if weights.version != self.version:
            self.network.load(weights.params)
            self.version = weights.version
            if self.continuous:
                self.log_std = self.network.log_std.astype(np.float64)
            self.exploration = None  # drawn anew from the new weights' spread

    def new_noise(self, batch: int) -> None:
        """gSDE: draw each env's exploration matrix, kept until the next call (the worker
        calls this at every segment start) or until new weights arrive. No-op otherwise."""
        if self.gsde:
            std = np.exp(self.log_std)  # [F, A]
            self.exploration = self.rng.standard_normal((batch, *std.shape)) * std

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """obs [B, *O] -> (actions, log pi(a|s) [B] float32), sampled.

        Discrete: actions [B] int64, drawn in numpy by inverse CDF, which costs a few
        microseconds on small batches where torch's per-op overhead dominates. Continuous:
        actions [B, *A] float32 from the diagonal Gaussian, unclipped (the log-prob is of this
        sample; `to_env` clips what the env gets).
        """
        if self.gsde:
            return self._act_gsde(obs)
        out = self.network.outputs(self.network.features(obs))
        if self.continuous:
            noise = self.rng.standard_normal(out.shape)
            actions = out + np.exp(self.log_std) * noise
            logp = (-0.5 * noise**2 - self.log_std - _HALF_LOG_2PI).sum(axis=1)
            shape = (len(out), *self.action_shape)
            return actions.astype(np.float32).reshape(shape), logp.astype(np.float32)
        z = out - out.max(axis=1, keepdims=True)
        logp_all = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        cdf = np.exp(logp_all).cumsum(axis=1)
        u = self.rng.random((len(cdf), 1), dtype=np.float32) * cdf[:, -1:]
        actions = np.minimum((u > cdf).sum(axis=1), cdf.shape[1] - 1)
        logp = np.take_along_axis(logp_all, actions[:, None], axis=1)[:, 0]
        return actions.astype(np.int64), logp.astype(np.float32)

    def _act_gsde(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """gSDE: action = mean + h W with this env's matrix W; its log-prob under the
        per-state Gaussian the learner evaluates (mean, sqrt(h^2 exp(2 log_std)))."""
        if self.exploration is None or len(self.exploration) != len(obs):
            self.new_noise(len(obs))
        h = self.network.features(obs)
        mean, std = np.split(self.network.outputs(h), 2, axis=1)
        h = h.astype(np.float64)
        actions = mean + np.einsum("bf,bfa->ba", h, self.exploration)
        z = (actions - mean) / std
        logp = (-0.5 * z**2 - np.log(std) - _HALF_LOG_2PI).sum(axis=1)
        shape = (len(obs), *self.action_shape)
        return actions.astype(np.float32).reshape(shape), logp.astype(np.float32)

    def act_greedy(self, obs: np.ndarray) -> np.ndarray:
        """obs [B, *O] -> the most probable actions: [B] int64, or the Gaussian means."""
        out = self.network.outputs(self.network.features(obs))
        if self.continuous:
            mean = out[:, : out.shape[1] // 2] if self.gsde else out
            return mean.astype(np.float32).reshape(len(out), *self.action_shape)
        return out.argmax(-1)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """What the env is given: continuous actions clipped to the space's bounds."""
        return np.clip(actions, self.low, self.high) if self.continuous else actions


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
