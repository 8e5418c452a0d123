"""The policy alone, for running outside Python and Ray: ONNX or TorchScript.

An export takes a batch of raw observations, exactly as the env gives them (float32 vectors,
or uint8 frames for pixel policies), and returns the actions the env takes: int64 indices, or
float32 vectors already clipped to the action space. What the training stack does around the
network is baked in: the observation normaliser's frozen statistics, a CNN's uint8 scaling,
the Gaussian's clip. The value head is left out.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from learner.model import ActorCritic

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript")
ONNX_OPSET = 18
INPUT, OUTPUT = "obs", "action"


class PolicyOnly(nn.Module):
    """obs [N, *O] -> actions [N] (int64) or [N, *A] (float32, within the action space).

    Greedy: the most probable action, or the Gaussian's mean. Stochastic: a sample from the
    policy, with new noise at every call (gSDE included: its per-state standard deviation, a
    fresh exploration matrix each step), drawn with the runtime's own generator.
    """

    def __init__(self, model: ActorCritic, action_space: gym.Space, stochastic: bool) -> None:
        super().__init__()
        self.model = model
        self.stochastic = stochastic
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.action_dim = model.action_dim
        self.action_shape = tuple(action_space.shape) if self.continuous else ()
        if self.continuous:
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.model.policy_from_features(self.model.policy_features(obs))
        if not self.continuous:
            if self.stochastic:  # Gumbel-max: a categorical sample with one uniform draw
                uniform = torch.rand_like(out).clamp(1e-20, 1.0 - 1e-7)
                out = out - torch.log(-torch.log(uniform))
            return out.argmax(-1)
        mean = out[:, : self.action_dim]
        if self.stochastic:
            std = out[:, self.action_dim :] if self.model.gsde else self.model.log_std.exp()
            mean = mean + std * torch.randn_like(mean)
        action = torch.maximum(
            torch.minimum(mean.reshape(-1, self.action_dim), self.high.reshape(1, -1)),
            self.low.reshape(1, -1),
        )
        return action.reshape(-1, *self.action_shape)


def example_obs(observation_space: gym.Space, batch: int = 2) -> torch.Tensor:
    """A batch of observations of the space's shape and dtype, to trace the export with."""
    space = observation_space
    sample = np.stack([space.sample() for _ in range(batch)]).astype(space.dtype)
    return torch.from_numpy(sample)


def export_policy(
    model: ActorCritic,
    observation_space: gym.Space,
    action_space: gym.Space,
    path: str | Path,
    fmt: Format,
    stochastic: bool = False,
) -> Path:
    """Write the policy of `model` (weights loaded) to `path`; the batch size stays free."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    # A copy without gradients: the export's outputs are plain tensors a caller can use.
    policy = PolicyOnly(copy.deepcopy(model).cpu(), action_space, stochastic).eval()
    policy.requires_grad_(False)
    obs = example_obs(observation_space)
    with torch.no_grad():
        if fmt == "torchscript":
            # Traced, not scripted: the branches above are fixed per export. check_trace off
            # for stochastic policies, whose two traced runs differ by design.
            with warnings.catch_warnings():  # TorchScript is deprecated, but what users load
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(policy, (obs,), check_trace=not stochastic)
                traced.save(str(path))
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                policy,
                (obs,),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes={"obs": {0: batch}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            program.save(str(path))
    return path
