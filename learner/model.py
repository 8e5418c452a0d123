"""Actor-critic networks."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from learner.config import ModelConfig

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(in_dim: int, sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in sizes:
        linear = nn.Linear(in_dim, width)
        nn.init.orthogonal_(linear.weight, math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers += [linear, _ACTIVATIONS[activation]()]
        in_dim = width
    return nn.Sequential(*layers)


def _head(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)
    return linear


class ActorCritic(nn.Module):
    """MLP policy (categorical logits) and value function over flattened observations.

    Orthogonal initialisation with a small policy-head gain starts the policy near uniform,
    the convention of the OpenAI baselines and Stable-Baselines3 A2C.
    """

    def __init__(self, obs_dim: int, num_actions: int, config: ModelConfig) -> None:
        super().__init__()
        sizes, act = config.hidden_sizes, config.activation
        self.policy_torso = _mlp(obs_dim, sizes, act)
        self.value_torso = None if config.shared_trunk else _mlp(obs_dim, sizes, act)
        self.policy_head = _head(sizes[-1], num_actions, 0.01)
        self.value_head = _head(sizes[-1], 1, 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [N, *O] -> (logits [N, A], values [N])."""
        x = obs.reshape(obs.shape[0], -1).float()
        h = self.policy_torso(x)
        hv = h if self.value_torso is None else self.value_torso(x)
        return self.policy_head(h), self.value_head(hv).squeeze(-1)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, *O] -> logits [N, A], without evaluating a separate value torso."""
        return self.policy_head(self.policy_torso(obs.reshape(obs.shape[0], -1).float()))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, *O] -> values [N]."""
        return self.forward(obs)[1]


def build_model(
    config: ModelConfig, observation_space: gym.Space, action_space: gym.Space
) -> ActorCritic:
    """Build the network for an environment's spaces, or say which space is unsupported."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(
            f"observation space {observation_space} is not supported: a Box is required"
        )
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(
            f"action space {action_space} is not supported: a Discrete space is required"
        )
    obs_dim = int(np.prod(observation_space.shape))
    return ActorCritic(obs_dim, int(action_space.n), config)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Detached CPU numpy copies of the parameters, for shipping through the object store."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Load parameters shipped by `state_to_numpy`."""
    # Copies: shipped arrays are read-only views of the object store.
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
