"""Which segments a learner can train on: the data contract checked against its model's spaces.

A segment that breaks it is left out with a reason naming its actor, so one bad actor costs
its own segments, never the update of the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from learner.core import Segment, SegmentError


class SegmentScreen:
    """Checks segments against the observation and action spaces a model was built for."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.obs_shape = tuple(observation_space.shape)
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.action_shape = tuple(action_space.shape)
        self.num_actions = None if self.continuous else int(action_space.n)

    def __call__(self, segments: Sequence[Segment]) -> tuple[list[Segment], list[str]]:
        """Split `segments` into those the model can train on and the reasons, each naming
        the actor, why the others cannot: a broken contract (wrong shape or dtype, NaN or
        inf), observations or actions that do not fit the model, or a segment length other
        than the first good segment's (one update stacks them along the batch axis)."""
        good: list[Segment] = []
        reasons: list[str] = []
        for seg in segments:
            try:
                seg.validate()
                step_shape = seg.obs.shape[2:]
                if step_shape != self.obs_shape:
                    seg._fail("obs", f"is {step_shape} per step; the model takes {self.obs_shape}")
                self._check_actions(seg)
                if good and seg.length != good[0].length:
                    first = good[0].length
                    seg._fail("length", f"T={seg.length}; this update's segments share T={first}")
            except SegmentError as err:
                reasons.append(str(err))
                continue
            good.append(seg)
        return good, reasons

    def _check_actions(self, seg: Segment) -> None:
        if self.continuous:
            if seg.actions.dtype != np.float32 or seg.actions.shape[2:] != self.action_shape:
                seg._fail(
                    "actions",
                    f"are {seg.actions.dtype.name} {seg.actions.shape[2:]} per step; the model "
                    f"takes float32 {self.action_shape}",
                )
        elif seg.actions.dtype != np.int64:
            seg._fail("actions", f"are {seg.actions.dtype.name}; the model takes int64 indices")
        elif seg.actions.size and (seg.actions.min() < 0 or seg.actions.max() >= self.num_actions):
            seg._fail("actions", f"must lie in [0, {self.num_actions})")
