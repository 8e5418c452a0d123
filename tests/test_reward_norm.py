"""Rewards scaled by the running std of the discounted return (VecNormalize's norm_reward),
kept in the learner for every actor's envs."""

from __future__ import annotations

import numpy as np
import pytest

from actors.config import EnvConfig
from actors.envs import env_spaces
from learner import metrics as M
from learner.config import LearnerConfig
from learner.learner import Learner
from learner.moments import Moments, merge, moments_of
from learner.reward_norm import RETURN_NORM_EPS, ReturnScaler
from tests.conftest import sample_segments

SPACES = env_spaces(EnvConfig())


def test_merging_the_moments_of_parts_equals_the_moments_of_the_whole():
    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, size=n) for n in (1, 7, 100, 13)]
    merged = Moments(0.0, 0.0, 1.0)
    for part in parts:
        merged = merge(merged, moments_of(part))
    whole = np.concatenate(parts)
    assert merged.count == whole.size
    assert merged.mean == pytest.approx(whole.mean(), rel=1e-12)
    assert merged.var == pytest.approx(whole.var(), rel=1e-12)


def _reference(gamma, segments):
    """VecNormalize's loop, written out: per env a running return, reset after done, the
    returns' moments over everything seen, each segment's rewards scaled by them."""
    returns_by_actor, seen, out = {}, [], []
    for actor, rewards, done in segments:
        running = returns_by_actor.get(actor, np.zeros(rewards.shape[1]))
        for t in range(rewards.shape[0]):
            running = running * gamma + rewards[t]
            seen.append(running.copy())
            running = np.where(done[t], 0.0, running)
        returns_by_actor[actor] = running
        std = np.sqrt(np.concatenate(seen).var() + RETURN_NORM_EPS)
        out.append(np.clip(rewards / std, -10, 10))
    return out


def test_scaled_rewards_match_a_written_out_reference_across_segments_and_actors():
    rng = np.random.default_rng(1)
    segments = [
        (actor, rng.normal(1.0, 3.0, size=(5, 3)), rng.random((5, 3)) < 0.2)
        for actor in (0, 1, 0, 0, 1)  # two actors, interleaved, their envs continuing
    ]
    scaler = ReturnScaler(gamma=0.9)
    got = [scaler.scale(actor, r, d, None) for actor, r, d in segments]
    for mine, theirs in zip(got, _reference(0.9, segments), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10)


def test_huge_rewards_are_clipped_and_the_state_round_trips():
    scaler = ReturnScaler(gamma=0.5)
    ones, done = np.ones((1000, 4)), np.zeros((1000, 4), bool)
    scaler.scale(0, ones, done, None)  # returns settle at ~2, with a small spread
    burst = np.full((1, 4), 1e3)
    assert (scaler.scale(0, burst, done[:1], None) == 10.0).all()  # VecNormalize's clip
    again = ReturnScaler(gamma=0.99)
    again.load_state(scaler.state())
    assert again.moments == scaler.moments


def test_the_learner_trains_on_scaled_rewards_and_keeps_their_scale_in_its_state():
    config = LearnerConfig(normalize_rewards=True)
    learner = Learner(config, *SPACES)
    segments = sample_segments(learner)
    for seg in segments:
        seg.rewards[:] = 1000.0  # the same returns, scaled, as with rewards of 1
    stats = learner.update(segments)
    assert np.isfinite(stats[M.LOSS_VALUE]) and learner.return_scaler.moments.count > 0
    restored = Learner(config, *SPACES)
    restored.load_state(learner.state())
    assert restored.return_scaler.moments == learner.return_scaler.moments
    plain = Learner(LearnerConfig(), *SPACES)
    assert plain.state()["return_norm"] is None
