"""Evaluating the policy during training: when, on which seeds, and when the run is solved."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from actors.evaluate import evaluate
from learner.core import PolicyWeights
from services.config import RunConfig

SEED_STRIDE = 7919
"""Between two evaluations' seeds (a prime): each evaluation plays start states of its own."""
SEED_SPREAD = 1_000_003
"""Multiplies the run's seed (a prime), so runs with nearby seeds start their evaluation seeds
far apart."""


class Evaluator:
    """Evaluates in the driver; the seconds it takes are counted apart (`seconds`), so the
    training clock can leave them out. A run is solved after `train.target_streak` passing
    evaluations in a row: once one passes, every following update is evaluated too."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.count = 0
        self.seconds = 0.0
        self.last_at = time.perf_counter()
        self.last_return = float("nan")
        self.streak = 0

    def due(self, window: Sequence[float], new_episodes: bool) -> bool:
        """Evaluate during a streak, on the interval, and as soon as the training returns of
        `window` reach the target (the greedy policy is then likely to have solved it)."""
        train = self.config.train
        if self.streak:
            return True
        if (
            train.eval_interval_s > 0
            and time.perf_counter() - self.last_at >= train.eval_interval_s
        ):
            return True
        return (
            train.target_return is not None
            and new_episodes
            and len(window) >= min(train.eval_episodes, train.return_window)
            and float(np.mean(window)) >= train.target_return
        )

    def __call__(self, weights: PolicyWeights) -> float:
        """Mean return of `train.eval_episodes` fresh episodes: each evaluation gets its own
        seeds, so a run cannot stop on start states it happens to handle."""
        began = time.perf_counter()
        train = self.config.train
        self.count += 1
        returns = evaluate(
            self.config.env,
            self.config.learner.model,
            weights,
            train.eval_episodes,
            seed=self.config.seed * SEED_SPREAD + SEED_STRIDE * self.count,
            deterministic=train.deterministic_eval,
        )
        self.last_return = float(np.mean(returns))
        target = train.target_return
        self.streak = self.streak + 1 if target is not None and self.last_return >= target else 0
        self.last_at = time.perf_counter()
        self.seconds += self.last_at - began
        return self.last_return

    @property
    def solved(self) -> bool:
        return self.streak >= self.config.train.target_streak
