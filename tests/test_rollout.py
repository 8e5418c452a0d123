"""The rollout worker without Ray: shapes, continuity, autoreset in both gymnasium modes."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tests.envs  # noqa: F401  (registers the counting env)
from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces, make_vector_env
from actors.evaluate import evaluate
from actors.rollout import EnvCrashed, RolloutWorker, actor_seed
from learner.config import LearnerConfig, ModelConfig
from learner.learner import Learner
from tests.envs import COUNTING_ID, CRASHING_ID


def _worker(env: EnvConfig, b=4, t=8, actor_id=0, seed=0) -> RolloutWorker:
    worker = RolloutWorker(
        env, ActorConfig(envs_per_actor=b, segment_length=t), ModelConfig(), actor_id, seed
    )
    learner = Learner(LearnerConfig(), *env_spaces(env))
    worker.policy.load(learner.get_weights())
    return worker


@pytest.mark.parametrize("vectorization", ["native", "sync"])
def test_cartpole_segment_shapes_and_dtypes(vectorization):
    w = _worker(EnvConfig(vectorization=vectorization), b=4, t=8)
    seg = w.sample().validate()
    assert seg.obs.shape == (9, 4, 4) and seg.obs.dtype == np.float32
    assert seg.actions.shape == (8, 4) and seg.actions.dtype == np.int64
    assert seg.behaviour_logp.dtype == np.float32 and (seg.behaviour_logp <= 0).all()
    assert seg.policy_version == 0 and seg.actor_id == 0


def test_segments_continue_across_calls():
    w = _worker(EnvConfig(), b=3, t=5)
    first, second = w.sample(), w.sample()
    np.testing.assert_array_equal(first.obs[-1], second.obs[0])


def test_sample_without_weights_is_an_error():
    env = EnvConfig()
    worker = RolloutWorker(env, ActorConfig(envs_per_actor=2, segment_length=2), ModelConfig())
    with pytest.raises(RuntimeError, match="before any weights"):
        worker.sample()


def test_same_step_autoreset_ships_the_final_observation():
    # Counting env: episodes truncated after 5 steps; obs = [step, episode number].
    w = _worker(EnvConfig(id=COUNTING_ID), b=2, t=12)
    seg = w.sample().validate()
    assert w.next_step_reset is False
    assert seg.valid.all()
    # Truncations at steps 4 and 9 (the 5th and 10th step) of both envs.
    assert np.flatnonzero(seg.truncated[:, 0]).tolist() == [4, 9]
    assert not seg.terminated.any()
    # After a truncation the next observation is already the new episode's first one...
    np.testing.assert_array_equal(seg.obs[5, :, 0], [0, 0])
    np.testing.assert_array_equal(seg.obs[5, :, 1], [1, 1])
    # ...and the true last one (step 5 of episode 0) travels in final_obs.
    assert seg.final_index.tolist() == [4 * 2, 4 * 2 + 1, 9 * 2, 9 * 2 + 1]
    np.testing.assert_array_equal(seg.final_obs[:2], [[5, 0], [5, 0]])
    np.testing.assert_array_equal(seg.final_obs[2:], [[5, 1], [5, 1]])
    assert seg.episode_returns.tolist() == [5.0] * 4
    assert seg.episode_lengths.tolist() == [5] * 4


def test_terminated_episodes_ship_no_final_observation():
    env = EnvConfig(id=COUNTING_ID, kwargs={"terminate_at": 3})
    seg = _worker(env, b=1, t=7).sample().validate()
    assert np.flatnonzero(seg.terminated[:, 0]).tolist() == [2, 5]
    assert len(seg.final_index) == 0
    assert seg.episode_lengths.tolist() == [3, 3]


def test_episodes_continue_across_segments():
    w = _worker(EnvConfig(id=COUNTING_ID), b=1, t=3)
    first, second = w.sample(), w.sample()
    assert len(first.episode_returns) == 0
    assert second.truncated[1, 0] and second.episode_lengths.tolist() == [5]


def test_next_step_autoreset_marks_reset_steps_invalid():
    # CartPole's native vector env resets on the step after an episode ends. A short time
    # limit makes truncations frequent.
    env = EnvConfig(vectorization="native", kwargs={"max_episode_steps": 6})
    w = _worker(env, b=8, t=40)
    assert w.next_step_reset is True
    seg = w.sample().validate()
    done = seg.terminated | seg.truncated
    assert done.any() and (~seg.valid).any()
    # Exactly the step after each episode end is invalid, within the segment.
    np.testing.assert_array_equal(~seg.valid[1:], done[:-1])
    assert not (seg.rewards[~seg.valid]).any()
    # The final observation of a truncated episode is the obs returned at its last step.
    for flat, final in zip(seg.final_index, seg.final_obs, strict=True):
        t, b = divmod(int(flat), seg.num_envs)
        np.testing.assert_array_equal(final, seg.obs[t + 1, b])
    # Episode lengths count real steps only, and never exceed the limit.
    assert seg.episode_lengths.max() <= 6
    assert (seg.episode_lengths[seg.episode_returns == 6] == 6).all()


def test_seeds_make_actors_differ_and_runs_repeat():
    env = EnvConfig()
    a, b, a2 = (_worker(env, actor_id=i, seed=0).sample() for i in (0, 1, 0))
    assert not np.array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.obs, a2.obs)
    np.testing.assert_array_equal(a.actions, a2.actions)


def test_unknown_env_names_the_field():
    with pytest.raises(ValueError, match="env.id='NoSuchEnv-v0'"):
        make_vector_env(EnvConfig(id="NoSuchEnv-v0"), 1)


def test_evaluate_runs_one_episode_per_env():
    env = EnvConfig(id=COUNTING_ID)
    weights = Learner(LearnerConfig(), *env_spaces(env)).get_weights()
    returns = evaluate(env, ModelConfig(), weights, episodes=3)
    assert returns.tolist() == [5.0, 5.0, 5.0]


def test_an_env_that_raises_is_rebuilt_in_place_and_its_partial_segment_dropped(tmp_path):
    marker = tmp_path / "crashed"
    env = EnvConfig(id=CRASHING_ID, kwargs={"crash_at": 6, "marker": str(marker)})
    w = _worker(env, b=2, t=4)
    w.sample()  # 4 steps of each env's life
    with pytest.raises(EnvCrashed) as crash:
        w.sample()  # the first env raises on its 6th step, mid-segment
    err = crash.value
    assert (err.actor_id, err.env_id, w.rebuilds) == (0, CRASHING_ID, 1)
    assert "RuntimeError: injected env crash at step 6" in err.trace
    assert "rebuilt; its partial segment was dropped" in str(err)
    # The next segment comes whole from fresh envs: every env starts at step 0 of episode 0,
    # on seeds the crashed envs never had.
    seg = w.sample().validate()
    assert seg.length == 4
    np.testing.assert_array_equal(seg.obs[0], [[0, 0], [0, 0]])
    assert actor_seed(0, 0, 1) != actor_seed(0, 0)


def test_env_crash_pickles_with_its_trace():
    import pickle

    crash = pickle.loads(pickle.dumps(EnvCrashed(3, "X-v0", "Traceback ...\nValueError: boom")))
    assert (crash.actor_id, crash.env_id, crash.trace.splitlines()[-1]) == (
        3,
        "X-v0",
        "ValueError: boom",
    )


def test_the_segment_says_where_its_sampling_time_went():
    w = _worker(EnvConfig(), b=4, t=8)
    start = time.perf_counter()
    seg = w.sample().validate()
    took = time.perf_counter() - start
    assert seg.env_time_s > 0 and seg.policy_time_s > 0
    assert seg.env_time_s + seg.policy_time_s <= took


def test_an_env_crash_travels_without_frames():
    """The crash an actor returns holds no frame, so no frame keeps the call's weights (a
    view of a compiled graph's channel buffer) alive: see RolloutActor.sample."""
    from actors.remote import RolloutActor

    env = EnvConfig(id=CRASHING_ID, kwargs={"crash_at": 2})
    actor = RolloutActor(env, ActorConfig(envs_per_actor=2, segment_length=4), ModelConfig(), 0, 0)
    segment, crash = actor.sample(Learner(LearnerConfig(), *env_spaces(env)).get_weights())
    assert segment is None and isinstance(crash, EnvCrashed)
    assert crash.__traceback__ is None and crash.__context__ is None
    assert "injected env crash" in crash.trace and not actor.sampling()
