"""Feature extractors ("torsos") the policy and value heads sit on, chosen by observation space.

Vector observations go through an MLP; stacked image frames `[C, H, W]` through the Nature
DQN convolutional layout (Mnih et al. 2015), the torso of A2C's Atari results in the OpenAI
baselines and Stable-Baselines3.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from learner.config import ModelConfig

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
NATURE_FEATURES = 512
"""Width of the Nature CNN's feature layer, which the heads read."""
TORSO_GAIN = math.sqrt(2)
"""Orthogonal-init gain of every torso layer, ReLU's gain, for tanh too (the convention of the
OpenAI baselines and Stable-Baselines3)."""


def orthogonal(layer: nn.Linear | nn.Conv2d, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear layers of `sizes` widths; input [N, in_dim] -> [N, sizes[-1]]."""
    layers: list[nn.Module] = []
    for width in sizes:
        layers += [orthogonal(nn.Linear(in_dim, width), TORSO_GAIN), _ACTIVATIONS[activation]()]
        in_dim = width
    return nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """[N, C, H, W] pixels -> [N, 512] features.

    Frames of a uint8 space are scaled to [0, 1] here, on whichever device the model lives, so
    they travel from the env to the learner's GPU as bytes: four times less than float32.
    """

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        super().__init__()
        channels, height, width = observation_space.shape
        # Fixed by the space, not by each batch's dtype: the same frames give the same
        # features whether they arrive as uint8 or were cast to float on the way.
        self.scale = 1.0 / 255.0 if observation_space.dtype == np.uint8 else 1.0
        self.convs = nn.Sequential(
            orthogonal(nn.Conv2d(channels, 32, 8, stride=4), TORSO_GAIN),
            nn.ReLU(),
            orthogonal(nn.Conv2d(32, 64, 4, stride=2), TORSO_GAIN),
            nn.ReLU(),
            orthogonal(nn.Conv2d(64, 64, 3, stride=1), TORSO_GAIN),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, channels, height, width)).shape[1]
        self.fc = nn.Sequential(orthogonal(nn.Linear(flat, NATURE_FEATURES), TORSO_GAIN), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(obs.float() * self.scale))


def build_torso(
    kind: str, config: ModelConfig, observation_space: gym.spaces.Box
) -> tuple[nn.Module, int]:
    """(torso module, width of its output) for a kind from `ModelConfig.torso_for`."""
    if kind == "cnn":
        return NatureCNN(observation_space), NATURE_FEATURES
    obs_dim = int(np.prod(observation_space.shape))
    return mlp(obs_dim, config.hidden_sizes, config.activation), config.hidden_sizes[-1]
