"""Frozen, validated configuration of the environment and the rollout actors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from learner.config import check_types, require


@dataclass(frozen=True)
class EnvConfig:
    """Which gymnasium environment the actors step, and how it is vectorised."""

    id: str = "CartPole-v1"
    """A registered gymnasium id, or 'module:EnvId' to import the module that registers it."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env constructor."""
    vectorization: Literal["auto", "native", "sync"] = "auto"
    """'native' uses the env's own vectorised implementation (e.g. CartPole's), 'sync' steps
    copies of the single env in a loop; 'auto' picks native where gymnasium has one."""
    preprocessing: Literal["none", "atari"] = "none"
    """'atari': the standard Atari pipeline (Mnih et al. 2015, as in SB3's AtariWrapper): 30
    random no-ops at reset, 4 frames skipped per action with the last two max-pooled,
    grayscale, 84 x 84, and the last 4 frames stacked: uint8 observations [4, 84, 84].
    Native ALE vector envs do this in C++ (with one stepping thread unless
    `kwargs.num_threads` says more); 'sync' wraps each env in gymnasium's AtariPreprocessing
    and FrameStackObservation."""

    def __post_init__(self) -> None:
        check_types(self, "env.")
        require(
            self.id.strip() != "",
            "env.id",
            self.id,
            "a gymnasium environment id such as 'CartPole-v1'",
        )


MAX_ACTORS = 4096
"""Most rollout actors one run may ask for: a typo (`40000`) must not queue thousands of actor
creations on the cluster."""


@dataclass(frozen=True)
class ActorConfig:
    """How many rollout actors run, how many envs each steps, and the segment they emit."""

    num_actors: int = 2
    """Rollout actors (Ray processes)."""
    envs_per_actor: int = 32
    """Environment copies each actor steps in one batch."""
    segment_length: int = 16
    """Steps per segment (T); also the n of the n-step returns."""
    num_cpus: float = 1.0
    """CPUs each rollout actor reserves in Ray."""

    def __post_init__(self) -> None:
        check_types(self, "actors.")
        require(
            1 <= self.num_actors <= MAX_ACTORS,
            "actors.num_actors",
            self.num_actors,
            f"an integer from 1 to {MAX_ACTORS}",
        )
        require(
            self.envs_per_actor >= 1,
            "actors.envs_per_actor",
            self.envs_per_actor,
            "an integer >= 1",
        )
        require(
            self.segment_length >= 1,
            "actors.segment_length",
            self.segment_length,
            "an integer >= 1",
        )
        require(self.num_cpus >= 0, "actors.num_cpus", self.num_cpus, "a number >= 0")
