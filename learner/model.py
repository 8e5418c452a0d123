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


class ObsNormalizer(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), as buffers:
    they are part of the state dict, so they travel with the weights and the checkpoints."""

    CLIP = 10.0

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch [N, obs_dim] into the running statistics."""
        if x.shape[0] == 0:
            return
        x = x.reshape(x.shape[0], -1).double()
        n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        spread = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.var.copy_(spread / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + 1e-8)
        return z.clamp(-self.CLIP, self.CLIP)


class ActorCritic(nn.Module):
    """MLP policy and value function over flattened observations.

    Discrete actions: categorical logits. Box actions: a diagonal Gaussian whose mean the
    network outputs and whose log standard deviation is a learned, state-independent vector.
    Orthogonal initialisation with a small policy-head gain starts the policy near uniform (or
    near zero mean), the convention of the OpenAI baselines and Stable-Baselines3 A2C.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, config: ModelConfig) -> None:
        super().__init__()
        sizes, act = config.hidden_sizes, config.activation
        self.continuous = isinstance(action_space, gym.spaces.Box)
        out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        # Only when asked for: the state dict (weights, checkpoints) stays as it was otherwise.
        self.obs_norm = ObsNormalizer(obs_dim) if config.normalize_obs else None
        self.policy_torso = _mlp(obs_dim, sizes, act)
        self.value_torso = None if config.shared_trunk else _mlp(obs_dim, sizes, act)
        self.policy_head = _head(sizes[-1], out, 0.01)
        self.value_head = _head(sizes[-1], 1, 1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.full((out,), float(config.log_std_init)))

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(obs.shape[0], -1).float()
        return x if self.obs_norm is None else self.obs_norm(x)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [N, *O] -> (policy outputs [N, A]: logits or Gaussian means, values [N])."""
        x = self._flat(obs)
        h = self.policy_torso(x)
        hv = h if self.value_torso is None else self.value_torso(x)
        return self.policy_head(h), self.value_head(hv).squeeze(-1)

    def policy_out(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, *O] -> logits or means [N, A], without evaluating a separate value torso."""
        return self.policy_head(self.policy_torso(self._flat(obs)))

    def distribution(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """The policy for outputs [N, A]: `log_prob(actions)` and `entropy()` are [N]."""
        if self.continuous:
            std = self.log_std.exp().expand_as(out)
            return torch.distributions.Independent(torch.distributions.Normal(out, std), 1)
        return torch.distributions.Categorical(logits=out)

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
    box = isinstance(action_space, gym.spaces.Box)
    if not (isinstance(action_space, gym.spaces.Discrete) or box):
        raise ValueError(
            f"action space {action_space} is not supported: Discrete or Box is required"
        )
    if box and not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ValueError(
            f"action space {action_space} is not supported: a Box needs finite bounds, "
            "which actions are clipped to"
        )
    obs_dim = int(np.prod(observation_space.shape))
    return ActorCritic(obs_dim, action_space, config)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Detached CPU numpy copies of the parameters, for shipping through the object store."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Load parameters shipped by `state_to_numpy`."""
    # Copies: shipped arrays are read-only views of the object store.
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
