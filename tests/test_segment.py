"""The segment contract: `validate()` accepts good segments and names what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from learner.core import SegmentError
from tests.conftest import make_segment


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
        ("env_time_s", -1.0, "env_time_s must be a finite number of seconds"),
        ("policy_time_s", float("nan"), "policy_time_s must be a finite number of seconds"),
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
