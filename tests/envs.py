"""Tiny deterministic envs whose observations reveal exactly where each episode stands."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

from bench.envs import claim_marker


def _register(name: str, entry_point: str, **kwargs) -> str:
    """Register `name` (once per process) and return the id to build it by: prefixed with
    `tests.envs:`, so every process that builds the env imports this module, and with it
    the registration, first (Ray's workers have not imported it)."""
    if name not in gym.registry:
        gym.register(name, entry_point=entry_point, **kwargs)
    return f"tests.envs:{name}"


class CountingEnv(gym.Env):
    """obs = [step within episode, episode number]; reward = 1 per step.

    Terminates after `terminate_at` steps when set; `max_episode_steps` in the registration
    truncates it. Episode numbers let a test tell a reset observation from a final one.
    """

    observation_space = gym.spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_at: int | None = None) -> None:
        self.terminate_at = terminate_at
        self.t = 0
        self.episode = -1

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.episode], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.episode += 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._obs(), 1.0, terminated, False, {}


COUNTING_ID = _register("troupe-test/Counting-v0", "tests.envs:CountingEnv", max_episode_steps=5)


class CrashingEnv(CountingEnv):
    """A `CountingEnv` whose `step` raises once it has taken `crash_at` steps in its life.

    With `marker` (a file path) only the first env, in any process, to get there raises: the
    fault happens once per test. Without it every env raises, every time: a crash loop.
    """

    def __init__(self, crash_at: int = 10, marker: str | None = None) -> None:
        super().__init__()
        self.crash_at, self.marker, self.steps = crash_at, marker, 0

    def step(self, action):
        self.steps += 1
        if self.steps >= self.crash_at and self._claim():
            raise RuntimeError(f"injected env crash at step {self.steps}")
        return super().step(action)

    def _claim(self) -> bool:
        return self.marker is None or claim_marker(self.marker)


CRASHING_ID = _register("troupe-test/Crashing-v0", "tests.envs:CrashingEnv", max_episode_steps=5)


class ExplodingEnv(CountingEnv):
    """A `CountingEnv` whose rewards become 1e37 once it has taken `explode_at` steps: the
    segments stay finite (episode returns too), but squared value errors overflow float32, so
    every update's loss is non-finite."""

    def __init__(self, explode_at: int = 10) -> None:
        super().__init__()
        self.explode_at, self.steps = explode_at, 0

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.steps >= self.explode_at:
            reward = 1e37
        return obs, reward, terminated, truncated, info


EXPLODING_ID = _register("troupe-test/Exploding-v0", "tests.envs:ExplodingEnv", max_episode_steps=5)


HOLD_LIMIT_S = 120.0
"""A held env that is never released gives up after this long, so a broken test fails."""


def wait_until(condition, failure: str) -> None:
    """Poll `condition` until it holds: a state another process creates, not a sleep that
    hopes it has. Raises TimeoutError(`failure`) after `HOLD_LIMIT_S`."""
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.01)


class HeldEnv(CountingEnv):
    """A `CountingEnv` whose one instance, across processes, that claims `marker` first holds
    its first step until the file `release` exists: one actor stuck mid-segment among free
    ones for exactly as long as the test wants, whatever the machine's speed. (Claimed at the
    first step: the driver builds an instance too, to read the spaces, and never steps it.)"""

    def __init__(self, marker: str, release: str) -> None:
        super().__init__()
        self.marker, self.release = marker, release
        self.held: bool | None = None

    def step(self, action):
        if self.held is None:
            self.held = claim_marker(self.marker)
            if self.held:
                wait_until(lambda: os.path.exists(self.release), f"{self.release} never appeared")
        return super().step(action)


HELD_ID = _register("troupe-test/Held-v0", "tests.envs:HeldEnv", max_episode_steps=5)


# A run on it keeps its actors mostly waiting, so on a 2-core machine the CPUs go to what the
# launcher test watches (hosts installing packages and joining a cluster) rather than to
# CartPole's thousands of frames a second, which that test has no use for.
PACED_ID = _register(
    "troupe-test/PacedCartPole-v0",
    "bench.envs:SlowCartPole",
    max_episode_steps=500,
    kwargs={"delay_s": 0.002},
)


class GatheredCartPole(CartPoleEnv):
    """CartPole-v1 whose first step in each process waits until `count` processes have come
    that far (a file per process in `folder`): runs that train side by side, as a PBT
    search's trials must to meet, whatever each one's start-up took (one trial of two
    finished before the other's first update in a slow CI run)."""

    def __init__(self, folder: str, count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder, self.count = folder, count
        self.gathered = False

    def step(self, action):
        if not self.gathered:
            Path(self.folder, str(os.getpid())).touch()
            wait_until(
                lambda: len(os.listdir(self.folder)) >= self.count,
                f"fewer than {self.count} processes in {self.folder}",
            )
            self.gathered = True
        return super().step(action)


GATHERED_ID = _register(
    "troupe-test/GatheredCartPole-v0", "tests.envs:GatheredCartPole", max_episode_steps=500
)
