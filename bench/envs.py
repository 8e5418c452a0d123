"""Envs for benchmarks: CartPole with one deliberately slow instance."""

from __future__ import annotations

import os
import time

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class SlowCartPole(CartPoleEnv):
    """CartPole-v1 whose `step` sleeps `delay_s` in the one instance, across processes, that
    creates `marker` first: the actor holding it is slow (a loaded or distant node), the
    others are not. Claimed at the first step: the driver builds an instance too, to read
    the spaces, and never steps it. With no marker every instance is slow, as a simulator
    that takes time to step."""

    def __init__(self, delay_s: float = 0.005, marker: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s, self.marker = delay_s, marker
        self.slow: bool | None = None

    def step(self, action):
        if self.slow is None:
            self.slow = self.delay_s > 0 and (self.marker is None or claim_marker(self.marker))
        if self.slow:
            time.sleep(self.delay_s)
        return super().step(action)


def claim_marker(marker: str) -> bool:
    """True for the first caller, in any process, to create `marker`."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


SLOW_CARTPOLE_ID = "bench.envs:troupe-bench/SlowCartPole-v1"
if "troupe-bench/SlowCartPole-v1" not in gym.registry:
    gym.register(
        "troupe-bench/SlowCartPole-v1",
        entry_point="bench.envs:SlowCartPole",
        max_episode_steps=500,
        reward_threshold=475.0,
    )
