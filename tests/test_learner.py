"""The learner without Ray: updates, versions, masking, and non-finite protection."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from actors.rollout import RolloutWorker
from learner import metrics as M
from learner.config import LearnerConfig, ModelConfig
from learner.learner import Learner, _Batch
from tests.test_segment import make_segment

SPACES = env_spaces(EnvConfig())


def _segments(learner, n=2, t=8, b=4, **env):
    workers = [
        RolloutWorker(
            EnvConfig(**env),
            ActorConfig(envs_per_actor=b, segment_length=t),
            learner.config.model,
            i,
        )
        for i in range(n)
    ]
    weights = learner.get_weights()
    return [w.sample(weights) for w in workers]


def test_update_advances_the_version_and_changes_weights():
    learner = Learner(LearnerConfig(), *SPACES)
    before = learner.get_weights()
    assert learner.get_weights() is before  # copied once per version
    stats = learner.update(_segments(learner))
    after = learner.get_weights()
    assert after.version == stats[M.POLICY_VERSION] == 1
    assert any(not np.array_equal(before.params[k], after.params[k]) for k in before.params)
    for key in (M.LOSS_POLICY, M.LOSS_VALUE, M.ENTROPY, M.GRAD_NORM):
        assert np.isfinite(stats[key])
    assert stats[M.BATCH_FRAMES] == 2 * 8 * 4


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_repeated_updates_fit_the_value_of_a_fixed_batch(optimizer):
    # The same batch 200 times: its policy falls 200 versions behind, so no lag limit.
    config = LearnerConfig(optimizer=optimizer, lr=3e-3, gamma=0.9, max_policy_lag=0)
    learner = Learner(config, *SPACES)
    segments = _segments(learner)
    first = learner.update(segments)[M.LOSS_VALUE]
    for _ in range(200):
        last = learner.update(segments)[M.LOSS_VALUE]
    assert last < 0.2 * first


def test_nonfinite_loss_skips_the_step():
    learner = Learner(LearnerConfig(), *SPACES)
    segments = _segments(learner)
    with torch.no_grad():
        learner.model.value_head.bias.fill_(float("nan"))
    stats = learner.update(segments)
    assert stats[M.SKIPPED_UPDATES] == 1
    assert stats[M.POLICY_VERSION] == 0
    assert all(p.grad is None for p in learner.model.parameters())


def test_a_batch_of_reset_steps_only_is_skipped_not_fatal():
    # T=1 with one env: right after an episode ends, the segment is one NEXT_STEP reset step.
    learner = Learner(LearnerConfig(), *SPACES)
    seg = _segments(learner, n=1, t=1, b=1)[0]
    reset_only = seg.replace(
        valid=np.zeros((1, 1), bool),
        rewards=np.zeros((1, 1), np.float32),
        terminated=np.zeros((1, 1), bool),
        truncated=np.zeros((1, 1), bool),
        final_obs=seg.final_obs[:0],
        final_index=seg.final_index[:0],
    )
    stats = learner.update([reset_only])
    assert stats[M.SKIPPED_UPDATES] == 1 and learner.version == 0


def test_a_segment_of_another_length_is_left_out():
    learner = Learner(LearnerConfig(), *SPACES)
    a = _segments(learner, n=1, t=4)[0]
    b = _segments(learner, n=1, t=5)[0].replace(actor_id=7)
    stats = learner.update([a, b])
    assert stats[M.REJECTIONS] == [
        "segment from actor 7: length T=5; this update's segments share T=4"
    ]
    assert stats[M.BATCH_FRAMES] == 4 * 4 and learner.version == 1


def _broken(seg, how: str):
    if how == "nan obs":
        obs = seg.obs.copy()
        obs[0, 0, 0] = np.nan
        return seg.replace(obs=obs)
    if how == "inf reward":
        rewards = seg.rewards.copy()
        rewards[1, 1] = np.inf
        return seg.replace(rewards=rewards)
    if how == "float64 actions":
        return seg.replace(actions=seg.actions.astype(np.float64))
    if how == "obs of another env":
        return seg.replace(
            obs=np.zeros((*seg.obs.shape[:2], 3), np.float32),
            final_obs=np.zeros((len(seg.final_obs), 3), np.float32),
        )
    if how == "action out of range":
        actions = seg.actions.copy()
        actions[0, 0] = 2  # CartPole has 2 actions
        return seg.replace(actions=actions)
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how, message",
    [
        ("nan obs", "actor 1: obs contains NaN or inf"),
        ("inf reward", "actor 1: rewards contains NaN or inf"),
        ("float64 actions", "actor 1: actions"),
        ("obs of another env", r"actor 1: obs is \(3,\) per step; the model takes \(4,\)"),
        ("action out of range", r"actor 1: actions must lie in \[0, 2\)"),
    ],
)
def test_a_malformed_segment_is_left_out_naming_the_actor_and_the_learner_carries_on(how, message):
    learner = Learner(LearnerConfig(), *SPACES)
    good, bad = _segments(learner, n=2)
    bad = _broken(bad.replace(actor_id=1), how)
    before = {k: v.copy() for k, v in learner.get_weights().params.items()}
    stats = learner.update([good, bad])
    (reason,) = stats[M.REJECTIONS]
    assert re.search(message, reason), reason
    assert stats[M.SEGMENTS_REJECTED] == 1 and stats[M.BATCH_FRAMES] == 8 * 4
    assert learner.version == 1 and np.isfinite(stats[M.LOSS_TOTAL])
    after = learner.get_weights().params
    assert all(np.isfinite(v).all() for v in after.values())
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_with_every_segment_malformed_the_weights_stay():
    learner = Learner(LearnerConfig(), *SPACES)
    segments = [_broken(s, "nan obs") for s in _segments(learner, n=2)]
    before = learner.get_weights()
    stats = learner.update(segments)
    assert len(stats[M.REJECTIONS]) == 2 and stats[M.SEGMENTS_REJECTED] == 2
    assert stats[M.BATCH_FRAMES] == 0 and math.isnan(stats[M.LOSS_TOTAL])
    assert learner.version == 0 and learner.get_weights() is before
    assert learner.update(_segments(learner))[M.SEGMENTS_REJECTED] == 2  # cumulative


def test_collate_reindexes_final_observations():
    a = make_segment(t=4, b=3, truncate=((1, 2),), terminate=())
    b = make_segment(t=4, b=2, truncate=((0, 1), (3, 0)), terminate=())
    batch = _Batch.collate([a, b], torch.device("cpu"))
    assert batch.obs.shape == (5, 5, 2)
    # (t=1, b=2) of a stays at column 2; (0, 1) and (3, 0) of b move to columns 4 and 3.
    assert batch.final_index.tolist() == [1 * 5 + 2, 0 * 5 + 4, 3 * 5 + 3]
    np.testing.assert_array_equal(
        batch.final_obs.numpy(), np.concatenate([a.final_obs, b.final_obs])
    )


def test_reset_steps_do_not_affect_the_update():
    # What happens at NEXT_STEP reset steps (action ignored by the env) must not matter.
    cfg = LearnerConfig(model=ModelConfig(hidden_sizes=(16,)))
    env = {"vectorization": "native", "kwargs": {"max_episode_steps": 5}}
    seg = _segments(Learner(cfg, *SPACES), n=1, t=12, b=4, **env)[0]
    assert (~seg.valid).any()
    actions = seg.actions.copy()
    actions[~seg.valid] = 1 - actions[~seg.valid]
    results = []
    for s in (seg, seg.replace(actions=actions)):
        learner = Learner(cfg, *SPACES, seed=3)
        learner.update([s])
        results.append(learner.get_weights().params)
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


def test_unsupported_spaces_are_named():
    import gymnasium as gym

    with pytest.raises(ValueError, match="action space .* is not supported: Discrete or Box"):
        Learner(LearnerConfig(), SPACES[0], gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="a Box needs finite bounds"):
        Learner(LearnerConfig(), SPACES[0], gym.spaces.Box(-np.inf, np.inf, (2,)))
    with pytest.raises(ValueError, match="observation space .* is not supported"):
        Learner(LearnerConfig(), gym.spaces.Discrete(3), SPACES[1])


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path needs a machine without it")
    with pytest.raises(RuntimeError, match="learner.device='cuda'"):
        Learner(LearnerConfig(device="cuda"), *SPACES)


def test_a_learner_restored_from_its_state_continues_exactly(tmp_path):
    config = LearnerConfig(optimizer="adam")
    a = Learner(config, *SPACES, seed=1)
    for _ in range(3):
        a.update(_segments(a))
    path = tmp_path / "state.pt"
    torch.save(a.state(), path)
    b = Learner(config, *SPACES, seed=99)  # different init: everything must come from the state
    b.load_state(torch.load(path, weights_only=True))
    assert b.version == a.version == 3
    for k, v in a.get_weights().params.items():
        np.testing.assert_array_equal(v, b.get_weights().params[k])
    batch = _segments(a)
    stats_a, stats_b = a.update(batch), b.update(batch)  # the optimiser moments came along
    assert stats_a[M.LOSS_TOTAL] == stats_b[M.LOSS_TOTAL]
    for k, v in a.get_weights().params.items():
        np.testing.assert_array_equal(v, b.get_weights().params[k])


def test_segments_too_far_behind_are_left_out_and_counted():
    learner = Learner(LearnerConfig(max_policy_lag=2), *SPACES)
    old = _segments(learner, n=1)[0]  # sampled with version 0
    for _ in range(3):
        learner.update(_segments(learner, n=1))
    fresh = _segments(learner, n=1)[0]
    stats = learner.update([old, fresh])
    assert (stats[M.STALE_SEGMENTS], stats[M.POLICY_LAG_MAX]) == (1, 3)
    assert stats[M.POLICY_LAG_MEAN] == 1.5
    assert stats[M.BATCH_FRAMES] == fresh.length * fresh.num_envs
    stats = learner.update([old])  # nothing left: no step, counted, lag still reported
    assert stats[M.STALE_SEGMENTS] == 2 and stats[M.POLICY_LAG_MAX] == 4
    assert stats[M.POLICY_VERSION] == 4 and np.isnan(stats[M.LOSS_POLICY])


def test_vtrace_on_policy_takes_the_same_step_as_nstep_returns():
    plain, corrected = (Learner(LearnerConfig(vtrace=v), *SPACES, seed=3) for v in (False, True))
    segments = _segments(plain)
    a, b = plain.update(segments), corrected.update(segments)
    assert b[M.RHO_MEAN] == pytest.approx(1.0, abs=1e-5)
    for key in (M.LOSS_POLICY, M.LOSS_VALUE, M.ENTROPY):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)
    for key, value in plain.get_weights().params.items():
        np.testing.assert_allclose(corrected.get_weights().params[key], value, atol=1e-5)


def test_vtrace_weights_off_policy_segments():
    learner = Learner(LearnerConfig(vtrace=True, lr=1e-2, max_policy_lag=0), *SPACES)
    old = _segments(learner)
    for _ in range(20):
        learner.update(_segments(learner))
    stats = learner.update(old)  # behaviour policy: version 0; learner: version 20
    assert stats[M.POLICY_LAG_MAX] == 20
    assert 0.0 < stats[M.RHO_MEAN] < 1.0  # truncated at rho_bar = 1, below it where pi < mu
    assert np.isfinite(stats[M.LOSS_POLICY])
