"""Rewards scaled by the running standard deviation of the discounted return, as
Stable-Baselines3's VecNormalize(norm_reward=True) does, computed where every env's stream
arrives: in the learner. Each (actor, env) keeps its running discounted return; the variance
of those returns over every env of every actor is one set of running moments (Chan et al.'s
parallel merge, `learner.moments`, as the observation statistics'), so the scale is the same for all
actors by construction, and it is saved in the learner's state (checkpoints, restarts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from learner.core import Segment
from learner.moments import Moments, merge, moments_of

RETURN_NORM_EPS = 1e-8
RETURN_NORM_CLIP = 10.0
"""VecNormalize's defaults: epsilon inside the square root, and the clip of scaled rewards."""


class ReturnScaler:
    """Scales rewards [T, B] of one actor's segment by the running std of the discounted
    return, and clips them to +-`clip`."""

    def __init__(self, gamma: float, clip: float = RETURN_NORM_CLIP) -> None:
        self.gamma, self.clip = gamma, clip
        self.moments = Moments(0.0, 0.0, 1.0)
        self._returns: dict[int, np.ndarray] = {}
        """Per actor id, each env's discounted return so far in its episode."""

    def scale(
        self, actor_id: int, rewards: np.ndarray, done: np.ndarray, valid: np.ndarray | None
    ) -> np.ndarray:
        """`rewards`, `done` (terminated or truncated) and `valid` are [T, B] of one actor,
        its segments in the order it stepped them. The segment's returns are folded into
        the moments first, then its rewards scaled with them."""
        t, b = rewards.shape
        running = self._returns.get(actor_id)
        if running is None or running.shape != (b,):
            running = np.zeros(b)
        returns = np.empty((t, b))
        for step in range(t):
            running = running * self.gamma + rewards[step]
            returns[step] = running
            running = np.where(done[step], 0.0, running)
        self._returns[actor_id] = running
        seen = returns if valid is None else returns[valid]
        self.moments = merge(self.moments, moments_of(seen))
        scaled = rewards / np.sqrt(self.moments.var + RETURN_NORM_EPS)
        return np.clip(scaled, -self.clip, self.clip).astype(rewards.dtype)

    def scale_all(self, segments: Sequence[Segment]) -> np.ndarray:
        """[T, sum B] every segment's rewards scaled, concatenated along the env axis in
        segment order (as `Batch.collate` lays them out)."""
        scaled = [self.scale(s.actor_id, s.rewards, s.terminated | s.truncated, s.valid)
                  for s in segments]  # fmt: skip
        return np.concatenate(scaled, axis=1)

    def state(self) -> dict:
        """The moments (what every actor's rewards are scaled by). The per-env returns are
        not kept: after a restart they start again from 0, as a reloaded VecNormalize's."""
        return dict(self.moments._asdict())

    def load_state(self, state: dict) -> None:
        self.moments = Moments(float(state["count"]), float(state["mean"]), float(state["var"]))
        self._returns.clear()
