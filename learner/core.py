"""The data contract between rollout actors and the learner.

A `Segment` is what an actor ships: `T` consecutive steps of `B` environments, time-major.
`PolicyWeights` is what the learner ships back: numpy parameters tagged with a version, so
they travel zero-copy through Ray's object store and every segment can name the policy
that produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


class SegmentError(ValueError):
    """A segment that breaks the contract; the message names the actor and the field."""


@dataclass(frozen=True)
class PolicyWeights:
    """A versioned snapshot of the actor-critic parameters (CPU numpy arrays)."""

    version: int
    params: dict[str, np.ndarray]


@dataclass(frozen=True)
class Segment:
    """`T` steps of `B` environments from one actor, time-major.

    Autoreset follows gymnasium's same-step convention: when step `t` ends an episode,
    `obs[t + 1]` is already the next episode's first observation. The true last observation of
    an episode cut by a time limit, which truncation bootstraps from, travels in `final_obs`.
    Vector envs that reset on the *next* step (gymnasium's NEXT_STEP mode) insert one step
    whose action is ignored; the actor marks it `valid = False` and it carries no transition.

    Fields (`O` is the observation shape, `K` the number of truncated-not-terminated steps):
        obs:            [T + 1, B, *O]  float32 or uint8; obs[T] is the bootstrap observation.
        actions:        [T, B] int64 (discrete), or [T, B, *A] float32 (continuous: the
                        sampled action before clipping to the space, as log-probs need).
        rewards:        [T, B]          float32.
        terminated:     [T, B]          bool: the MDP ended; the value after it is zero.
        truncated:      [T, B]          bool: cut by a time limit; bootstrap from final_obs.
        valid:          [T, B]          bool: False for NEXT_STEP reset steps.
        behaviour_logp: [T, B]          float32: log pi_behaviour(a_t | s_t).
        final_obs:      [K, *O]         the last observation of each truncated episode.
        final_index:    [K]             int64 flat index t * B + b of those steps, ascending.
        episode_returns, episode_lengths: [E] episodes that finished inside this segment.
        policy_version: version of the weights that acted.
        actor_id:       which actor produced it.
        env_time_s, policy_time_s: seconds the actor spent stepping its envs and computing
                        actions for this segment (where a small batch's time goes).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    behaviour_logp: np.ndarray
    final_obs: np.ndarray
    final_index: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    policy_version: int
    actor_id: int
    env_time_s: float = 0.0
    policy_time_s: float = 0.0

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def frames(self) -> int:
        return self.length * self.num_envs

    def validate(self) -> Segment:
        """Check shapes, dtypes, finiteness and the truncation bookkeeping; return self."""
        if self.rewards.ndim != 2:
            self._fail("rewards", f"must be [T, B], got shape {self.rewards.shape}")
        t, b = self.rewards.shape
        if t < 1 or b < 1:
            self._fail("rewards", f"must have T >= 1 and B >= 1, got shape {(t, b)}")
        obs_shape = self.obs.shape[2:]
        continuous = isinstance(self.actions, np.ndarray) and self.actions.dtype == np.float32
        action_shape = self.actions.shape[2:] if continuous else ()
        expect = {
            "obs": ((t + 1, b, *obs_shape), (np.float32, np.uint8)),
            "actions": ((t, b, *action_shape), (np.float32 if continuous else np.int64,)),
            "rewards": ((t, b), (np.float32,)),
            "terminated": ((t, b), (np.bool_,)),
            "truncated": ((t, b), (np.bool_,)),
            "valid": ((t, b), (np.bool_,)),
            "behaviour_logp": ((t, b), (np.float32,)),
            "final_obs": ((len(self.final_index), *obs_shape), (self.obs.dtype.type,)),
            "final_index": ((len(self.final_index),), (np.int64,)),
            "episode_returns": ((len(self.episode_returns),), (np.float32,)),
            "episode_lengths": ((len(self.episode_returns),), (np.int64,)),
        }
        for name, (shape, dtypes) in expect.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray):
                self._fail(name, f"must be a numpy array, got {type(value).__name__}")
            if value.shape != shape:
                self._fail(name, f"expected shape {shape}, got {value.shape}")
            if value.dtype.type not in dtypes:
                allowed = ", ".join(np.dtype(d).name for d in dtypes)
                self._fail(name, f"expected dtype {allowed}, got {value.dtype.name}")
        finite = ("obs", "actions", "rewards", "behaviour_logp", "final_obs", "episode_returns")
        for name in finite:
            value = getattr(self, name)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                self._fail(name, "contains NaN or inf")
        for name in ("env_time_s", "policy_time_s"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and 0 <= value < float("inf")):
                self._fail(name, f"must be a finite number of seconds >= 0, got {value!r}")
        if not continuous and (self.behaviour_logp > 0).any():  # densities may exceed 1
            self._fail("behaviour_logp", "log-probabilities of discrete actions must be <= 0")
        cut = (self.truncated & ~self.terminated).reshape(-1)
        if not np.array_equal(np.flatnonzero(cut), self.final_index):
            self._fail(
                "final_index",
                "must list, ascending, exactly the steps that are truncated and not terminated",
            )
        if (~self.valid & (self.terminated | self.truncated | (self.rewards != 0))).any():
            self._fail("valid", "an invalid (reset) step must have zero reward and no episode end")
        return self

    def _fail(self, field: str, why: str) -> None:
        raise SegmentError(f"segment from actor {self.actor_id}: {field} {why}")

    def replace(self, **changes) -> Segment:
        return dataclasses.replace(self, **changes)
