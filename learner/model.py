"""Actor-critic networks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from learner.config import ModelConfig
from learner.moments import Moments, merge
from learner.spaces import check_spaces
from learner.torsos import build_torso, orthogonal

GSDE_EPS = 1e-6
"""Added to gSDE's variance, which is zero where every feature is."""
OBS_NORM_CLIP = 10.0
"""Normalised observations are clipped to this many standard deviations either side, so a
rare outlier cannot saturate the torso."""
OBS_NORM_EPS = 1e-8
"""Added to the running variance before its square root: a constant feature has none."""
POLICY_HEAD_GAIN = 0.01
"""Orthogonal-init gain of the policy head: small, so the first policy is near uniform (or
its Gaussian mean near zero)."""
VALUE_HEAD_GAIN = 1.0
"""Orthogonal-init gain of the value head."""


class ObsNormalizer(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), as buffers:
    they are part of the state dict, so they travel with the weights and the checkpoints."""

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
        batch = Moments(x.shape[0], x.mean(0), x.var(0, unbiased=False))
        merged = merge(Moments(self.count, self.mean, self.var), batch)
        self.mean.copy_(merged.mean)
        self.var.copy_(merged.var)
        self.count.copy_(merged.count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + OBS_NORM_EPS)
        return z.clamp(-OBS_NORM_CLIP, OBS_NORM_CLIP)


class ActorCritic(nn.Module):
    """Policy and value function on a torso chosen by the observation space (see `torsos`).

    Discrete actions: categorical logits. Box actions: a diagonal Gaussian whose mean the
    network outputs. Its standard deviation depends on `ModelConfig.exploration`: with
    'gaussian' it is `exp(log_std)`, a learned vector (one per action), the same in every
    state; with 'gsde' `log_std` is a learned [F, A] matrix, the log spread of the exploration
    matrix's entries, and the standard deviation depends on the state, through the policy
    torso's (detached) features h: sqrt(h^2 @ exp(2 log_std) + GSDE_EPS) per action (see
    `policy_from_features`).
    Orthogonal initialisation with a small policy-head gain starts the policy near uniform (or
    near zero mean), the convention of the OpenAI baselines and Stable-Baselines3 A2C;
    `ModelConfig.ortho_init` false keeps PyTorch's default init instead.
    """

    def __init__(
        self, config: ModelConfig, observation_space: gym.spaces.Box, action_space: gym.Space
    ) -> None:
        super().__init__()
        self.torso_kind = config.torso_for(observation_space)
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.gsde = config.exploration == "gsde"
        out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        self.action_dim = out
        # Only when asked for: the state dict (weights, checkpoints) stays as it was otherwise.
        obs_dim = int(np.prod(observation_space.shape))
        self.obs_norm = ObsNormalizer(obs_dim) if config.normalize_obs else None
        self.policy_torso, width = build_torso(self.torso_kind, config, observation_space)
        self.value_torso = (
            None
            if config.shared_trunk
            else build_torso(self.torso_kind, config, observation_space)[0]
        )
        self.policy_head = orthogonal(nn.Linear(width, out), POLICY_HEAD_GAIN)
        self.value_head = orthogonal(nn.Linear(width, 1), VALUE_HEAD_GAIN)
        if self.continuous:
            # gSDE: one log std per (feature, action) pair, the spread of the exploration
            # matrix's entries; otherwise one per action.
            shape = (width, out) if self.gsde else (out,)
            self.log_std = nn.Parameter(torch.full(shape, float(config.log_std_init)))
        if not config.ortho_init:
            for layer in self.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    layer.reset_parameters()  # PyTorch's own init, as when it was built

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        if self.torso_kind == "cnn":  # it keeps the image shape and scales uint8 itself
            return obs
        x = obs.reshape(obs.shape[0], -1).float()
        return x if self.obs_norm is None else self.obs_norm(x)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [N, *O] -> (policy outputs, values [N]). The outputs are logits [N, A],
        Gaussian means [N, A], or with gSDE means and standard deviations [N, 2A]."""
        x = self._flat(obs)
        h = self.policy_torso(x)
        hv = h if self.value_torso is None else self.value_torso(x)
        return self.policy_from_features(h), self.value_head(hv).squeeze(-1)

    def policy_features(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, *O] -> the policy torso's features [N, F] (what gSDE's noise reads)."""
        return self.policy_torso(self._flat(obs))

    def policy_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """Features [N, F] -> policy outputs, as `forward` gives them."""
        mean = self.policy_head(h)
        if not self.gsde:
            return mean
        # gSDE (Raffin et al. 2022): noise = h W with W ~ N(0, exp(log_std)^2) entrywise, so
        # per action a Gaussian of variance (h^2) exp(2 log_std). The features are detached:
        # exploration does not train the torso (SB3's default, learn_features=False).
        variance = (h.detach() ** 2) @ torch.exp(2 * self.log_std)
        return torch.cat([mean, torch.sqrt(variance + GSDE_EPS)], dim=-1)

    def distribution(self, out: torch.Tensor) -> torch.distributions.Distribution:
        """The policy for outputs from `forward`: `log_prob(actions)` and `entropy()` are [N]."""
        if self.gsde:
            mean, std = out.split(self.action_dim, dim=-1)
            return torch.distributions.Independent(torch.distributions.Normal(mean, std), 1)
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
    check_spaces(config, observation_space, action_space)
    return ActorCritic(config, observation_space, action_space)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Detached CPU numpy copies of the parameters, for shipping through the object store."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Load parameters shipped by `state_to_numpy`."""
    # Copies: shipped arrays are read-only views of the object store.
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
