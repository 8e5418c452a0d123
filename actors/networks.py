"""The policy half of the learner's actor-critic, for acting: observations -> torso features
-> policy outputs, from shipped `PolicyWeights` parameters.

The MLP runs in numpy. On the small batches an actor steps (tens to hundreds of envs), a
torch op costs several microseconds of dispatch and a numpy op about one, so the numpy
forward pass is the faster one; and an actor with an MLP policy never imports torch, which
costs seconds of CPU per process at start-up. The CNN runs in torch, imported only then.
Both compute what `learner.model.ActorCritic` computes (float32; tests hold them to it).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from learner.config import ModelConfig
from learner.spaces import check_spaces

# The learner model's constants, in float32; copied, not imported, since `learner.model`
# imports torch (tests hold the two networks to the same outputs).
GSDE_EPS = np.float32(1e-6)
"""As `learner.model.GSDE_EPS`: added to gSDE's variance."""
OBS_NORM_CLIP = np.float32(10.0)
"""As `learner.model.OBS_NORM_CLIP`: normalised observations are clipped to +-this."""
OBS_NORM_EPS = np.float32(1e-8)
"""As `learner.model.OBS_NORM_EPS`: added to the running variance."""


class PolicyNetwork:
    """`load(params)`, then `features(obs)` [B, F] and `outputs(features)`: logits [B, A],
    Gaussian means [B, A], or with gSDE means and standard deviations [B, 2A] (float32)."""

    log_std: np.ndarray | None = None

    def load(self, params: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def features(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def outputs(self, features: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def policy_network(
    config: ModelConfig, observation_space: gym.spaces.Box, action_space: gym.Space
) -> PolicyNetwork:
    """Numpy for the MLP torso, torch for the CNN."""
    if check_spaces(config, observation_space, action_space) == "mlp":
        return NumpyMLP(config)
    return TorchPolicy(config, observation_space, action_space)


class NumpyMLP(PolicyNetwork):
    """`obs_norm` -> `policy_torso` -> `policy_head` (and gSDE's spread) of the MLP model."""

    def __init__(self, config: ModelConfig) -> None:
        self.depth = len(config.hidden_sizes)
        self.activation = np.tanh if config.activation == "tanh" else _relu
        self.gsde = config.exploration == "gsde"

    def load(self, params: dict[str, np.ndarray]) -> None:
        # Transposed once per version, so each step is one contiguous matmul per layer.
        def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
            weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
            return np.ascontiguousarray(weight.T, dtype=np.float32), bias.astype(np.float32)

        # nn.Sequential numbers each Linear and its activation: Linear layers sit at 0, 2, ...
        self.layers = [linear(f"policy_torso.{2 * i}") for i in range(self.depth)]
        self.head = linear("policy_head")
        self.norm = None
        if "obs_norm.mean" in params:
            mean = params["obs_norm.mean"].astype(np.float32)
            scale = np.sqrt(params["obs_norm.var"].astype(np.float32) + OBS_NORM_EPS)
            self.norm = (mean, scale)
        if "log_std" in params:
            self.log_std = np.array(params["log_std"], dtype=np.float32)
            self.variance = np.exp(2 * self.log_std) if self.gsde else None

    def features(self, obs: np.ndarray) -> np.ndarray:
        x = obs.reshape(len(obs), -1).astype(np.float32, copy=False)
        if self.norm is not None:
            mean, scale = self.norm
            x = np.clip((x - mean) / scale, -OBS_NORM_CLIP, OBS_NORM_CLIP)
        for weight, bias in self.layers:
            x = x @ weight
            x += bias
            x = self.activation(x, out=x)
        return x

    def outputs(self, features: np.ndarray) -> np.ndarray:
        weight, bias = self.head
        out = features @ weight
        out += bias
        if not self.gsde:
            return out
        std = np.sqrt(np.square(features) @ self.variance + GSDE_EPS)
        return np.concatenate([out, std], axis=1)


def _relu(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=out)


class TorchPolicy(PolicyNetwork):
    """The learner's own model class on the CPU, one thread, no autograd (the CNN)."""

    def __init__(
        self, config: ModelConfig, observation_space: gym.spaces.Box, action_space: gym.Space
    ) -> None:
        import torch

        from learner.model import build_model

        self.torch = torch
        self.model = build_model(config, observation_space, action_space)
        self.model.requires_grad_(False)

    def load(self, params: dict[str, np.ndarray]) -> None:
        from learner.model import load_numpy_state

        load_numpy_state(self.model, params)
        if self.model.continuous:
            self.log_std = self.model.log_std.numpy().copy()

    def features(self, obs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.policy_features(self.torch.from_numpy(obs)).numpy()

    def outputs(self, features: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.policy_from_features(self.torch.from_numpy(features)).numpy()
