"""The segment contract: `validate()` accepts good segments and names what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from learner.core import Segment, SegmentError


def make_segment(t=4, b=3, obs_dim=2, actor_id=7, truncate=((1, 2),), terminate=((2, 0),)):
    rng = np.random.default_rng(0)
    terminated = np.zeros((t, b), dtype=bool)
    truncated = np.zeros((t, b), dtype=bool)
    for i, j in terminate:
        terminated[i, j] = True
    for i, j in truncate:
        truncated[i, j] = True
    cut = np.flatnonzero((truncated & ~terminated).reshape(-1))
    return Segment(
        obs=rng.normal(size=(t + 1, b, obs_dim)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, b)),
        rewards=np.ones((t, b), dtype=np.float32),
        terminated=terminated,
        truncated=truncated,
        valid=np.ones((t, b), dtype=bool),
        behaviour_logp=np.full((t, b), -0.69, dtype=np.float32),
        final_obs=rng.normal(size=(len(cut), obs_dim)).astype(np.float32),
        final_index=cut.astype(np.int64),
        episode_returns=np.array([3.0], dtype=np.float32),
        episode_lengths=np.array([3], dtype=np.int64),
        policy_version=5,
        actor_id=actor_id,
    )


def test_a_good_segment_validates():
    seg = make_segment()
    assert seg.validate() is seg
    assert (seg.length, seg.num_envs, seg.frames) == (4, 3, 12)


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("obs", np.zeros((4, 3, 2), np.float32), "obs expected shape"),
        ("obs", np.zeros((5, 3, 2), np.float64), "obs expected dtype"),
        ("actions", np.zeros((4, 3), np.float64), "actions expected dtype int64"),
        ("rewards", np.zeros((4, 2), np.float32), "shape"),
        ("terminated", np.zeros((4, 3), np.int64), "terminated expected dtype bool"),
        ("behaviour_logp", np.full((4, 3), 0.5, np.float32), "behaviour_logp"),
        ("final_index", np.array([], dtype=np.int64), "final_obs expected shape"),
        ("episode_lengths", np.array([3, 4], dtype=np.int64), "episode_lengths"),
        ("actions", [[0]], "must be a numpy array"),
    ],
)
def test_contract_violations_name_the_actor_and_field(field, bad, message):
    seg = make_segment().replace(**{field: bad})
    with pytest.raises(SegmentError, match=message) as err:
        seg.validate()
    assert "actor 7" in str(err.value)


def test_nan_observations_are_rejected():
    seg = make_segment()
    obs = seg.obs.copy()
    obs[2, 1, 0] = np.nan
    with pytest.raises(SegmentError, match="obs contains NaN"):
        seg.replace(obs=obs).validate()


def test_final_index_must_match_truncations():
    seg = make_segment()
    with pytest.raises(SegmentError, match="final_index"):
        seg.replace(final_index=seg.final_index + 1).validate()


def test_truncation_that_also_terminates_needs_no_final_obs():
    seg = make_segment(truncate=((2, 0),), terminate=((2, 0),))
    assert len(seg.final_index) == 0
    seg.validate()


def test_invalid_steps_carry_nothing():
    seg = make_segment()
    valid = seg.valid.copy()
    valid[0, 0] = False  # reward there is 1
    with pytest.raises(SegmentError, match="valid"):
        seg.replace(valid=valid).validate()
