"""Which observation and action spaces the actor-critic takes, checked without building it
(and without torch), so a run can fail before anything starts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from learner.config import ConfigError, ModelConfig


def check_spaces(config: ModelConfig, observation_space: gym.Space, action_space: gym.Space):
    """Raise ValueError (ConfigError for a model setting) naming what does not fit; return
    the torso kind `config` gives the observation space ('mlp' or 'cnn')."""
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
    if config.exploration == "gsde" and not box:
        raise ConfigError(
            f"learner.model.exploration='gsde' needs a Box action space; {action_space} "
            "is discrete. Use exploration: gaussian (it does not apply to discrete actions)"
        )
    return config.torso_for(observation_space)
