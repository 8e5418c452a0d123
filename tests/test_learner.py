"""The learner without Ray: updates, versions, masking, and non-finite protection."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from actors.config import EnvConfig
from actors.envs import env_spaces
from learner import metrics as M
from learner.batch import Batch
from learner.config import LearnerConfig, ModelConfig
from learner.device import resolve_device
from learner.learner import Learner
from tests.conftest import make_segment, sample_segments

SPACES = env_spaces(EnvConfig())


def test_update_advances_the_version_and_changes_weights():
    learner = Learner(LearnerConfig(), *SPACES)
    before = learner.get_weights()
    assert learner.get_weights() is before  # copied once per version
    stats = learner.update(sample_segments(learner))
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
    segments = sample_segments(learner)
    first = learner.update(segments)[M.LOSS_VALUE]
    for _ in range(200):
        last = learner.update(segments)[M.LOSS_VALUE]
    assert last < 0.2 * first


def test_nonfinite_loss_skips_the_step():
    learner = Learner(LearnerConfig(), *SPACES)
    segments = sample_segments(learner)
    with torch.no_grad():
        learner.model.value_head.bias.fill_(float("nan"))
    stats = learner.update(segments)
    assert stats[M.SKIPPED_UPDATES] == 1
    assert stats[M.POLICY_VERSION] == 0
    assert all(p.grad is None for p in learner.model.parameters())


def test_a_batch_of_reset_steps_only_is_skipped_not_fatal():
    # T=1 with one env: right after an episode ends, the segment is one NEXT_STEP reset step.
    learner = Learner(LearnerConfig(), *SPACES)
    seg = sample_segments(learner, n=1, t=1, b=1)[0]
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
    a = sample_segments(learner, n=1, t=4)[0]
    b = sample_segments(learner, n=1, t=5)[0].replace(actor_id=7)
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
    good, bad = sample_segments(learner, n=2)
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
    segments = [_broken(s, "nan obs") for s in sample_segments(learner, n=2)]
    before = learner.get_weights()
    stats = learner.update(segments)
    assert len(stats[M.REJECTIONS]) == 2 and stats[M.SEGMENTS_REJECTED] == 2
    assert stats[M.BATCH_FRAMES] == 0 and math.isnan(stats[M.LOSS_TOTAL])
    assert learner.version == 0 and learner.get_weights() is before
    assert learner.update(sample_segments(learner))[M.SEGMENTS_REJECTED] == 2  # cumulative


def test_collate_reindexes_final_observations():
    a = make_segment(t=4, b=3, truncate=((1, 2),), terminate=())
    b = make_segment(t=4, b=2, truncate=((0, 1), (3, 0)), terminate=())
    batch = Batch.collate([a, b], torch.device("cpu"))
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
    seg = sample_segments(Learner(cfg, *SPACES), n=1, t=12, b=4, **env)[0]
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


def test_cuda_device_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only node
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="learner.device='cuda'"):
        Learner(LearnerConfig(device="cuda"), *SPACES)


def test_a_learner_restored_from_its_state_continues_exactly(tmp_path):
    config = LearnerConfig(optimizer="adam")
    a = Learner(config, *SPACES, seed=1)
    for _ in range(3):
        a.update(sample_segments(a))
    path = tmp_path / "state.pt"
    torch.save(a.state(), path)
    b = Learner(config, *SPACES, seed=99)  # different init: everything must come from the state
    b.load_state(torch.load(path, weights_only=True))
    assert b.version == a.version == 3
    for k, v in a.get_weights().params.items():
        np.testing.assert_array_equal(v, b.get_weights().params[k])
    batch = sample_segments(a)
    stats_a, stats_b = a.update(batch), b.update(batch)  # the optimiser moments came along
    assert stats_a[M.LOSS_TOTAL] == stats_b[M.LOSS_TOTAL]
    for k, v in a.get_weights().params.items():
        np.testing.assert_array_equal(v, b.get_weights().params[k])


def test_segments_too_far_behind_are_left_out_and_counted():
    learner = Learner(LearnerConfig(max_policy_lag=2), *SPACES)
    old = sample_segments(learner, n=1)[0]  # sampled with version 0
    for _ in range(3):
        learner.update(sample_segments(learner, n=1))
    fresh = sample_segments(learner, n=1)[0]
    stats = learner.update([old, fresh])
    assert (stats[M.STALE_SEGMENTS], stats[M.POLICY_LAG_MAX]) == (1, 3)
    assert stats[M.POLICY_LAG_MEAN] == 1.5
    assert stats[M.BATCH_FRAMES] == fresh.length * fresh.num_envs
    stats = learner.update([old])  # nothing left: no step, counted, lag still reported
    assert stats[M.STALE_SEGMENTS] == 2 and stats[M.POLICY_LAG_MAX] == 4
    assert stats[M.POLICY_VERSION] == 4 and np.isnan(stats[M.LOSS_POLICY])


def test_vtrace_on_policy_takes_the_same_step_as_nstep_returns():
    plain, corrected = (Learner(LearnerConfig(vtrace=v), *SPACES, seed=3) for v in (False, True))
    segments = sample_segments(plain)
    a, b = plain.update(segments), corrected.update(segments)
    assert b[M.RHO_MEAN] == pytest.approx(1.0, abs=1e-5)
    for key in (M.LOSS_POLICY, M.LOSS_VALUE, M.ENTROPY):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)
    for key, value in plain.get_weights().params.items():
        np.testing.assert_allclose(corrected.get_weights().params[key], value, atol=1e-5)


def test_vtrace_weights_off_policy_segments():
    learner = Learner(LearnerConfig(vtrace=True, lr=1e-2, max_policy_lag=0), *SPACES)
    old = sample_segments(learner)
    for _ in range(20):
        learner.update(sample_segments(learner))
    # The weights, recomputed in numpy from the current policy's probabilities of the actions
    # the version-0 policy took: min(1, pi / mu) over the valid steps.
    obs = np.concatenate([s.obs[:-1] for s in old], axis=1)
    with torch.no_grad():
        logits = learner.model(torch.from_numpy(obs.reshape(-1, 4)))[0].double().numpy()
    actions = np.concatenate([s.actions for s in old], axis=1).reshape(-1)
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi = (pi / pi.sum(1, keepdims=True))[np.arange(len(actions)), actions]
    mu = np.exp(np.concatenate([s.behaviour_logp for s in old], axis=1).reshape(-1))
    valid = np.concatenate([s.valid for s in old], axis=1).reshape(-1)
    rhos = np.minimum(1.0, pi / mu)[valid]
    stats = learner.update(old)  # behaviour policy: version 0; learner: version 20
    assert stats[M.POLICY_LAG_MAX] == 20
    assert rhos.min() < 0.99  # the policies differ, so some weights are cut below 1
    assert stats[M.RHO_MEAN] == pytest.approx(rhos.mean(), rel=1e-5)
    assert np.isfinite(stats[M.LOSS_POLICY])


def _blank_learner(**config) -> Learner:
    """A learner whose heads read nothing of the state: V(s) = 1 everywhere (final
    observations included) and a uniform policy over CartPole's 2 actions, so its targets and
    losses can be worked out by hand."""
    learner = Learner(LearnerConfig(gamma=0.5, **config), *SPACES)
    with torch.no_grad():
        for head in (learner.model.policy_head, learner.model.value_head):
            head.weight.zero_()
            head.bias.zero_()
        learner.model.value_head.bias.fill_(1.0)
    return learner


def _hand_segment(**changes):
    """make_segment's [T=4, B=3] batch on CartPole's observations: rewards of 1, env 0
    terminated at t=2, env 2 truncated at t=1, behaviour log-probs -0.69."""
    return make_segment(obs_dim=4).replace(policy_version=0, **changes)


# Advantages of `_hand_segment` under `_blank_learner` (V = 1, gamma = 0.5), [T, B]. n-step:
# R - 1, the return bootstrapping 0 after the termination, V(final obs) = 1 after the
# truncation and V(s_T) = 1 at the segment's end.
_NSTEP_ADVANTAGES = [[0.75, 0.9375, 0.75], [0.5, 0.875, 0.5], [0.0, 0.75, 0.75], [0.5, 0.5, 0.5]]
# GAE, lambda = 0.5: the TD errors are 0.5 but 0 at the termination, summed with weight
# gamma * lambda = 0.25 to the episode's or the segment's end.
_GAE_ADVANTAGES = [
    [0.625, 0.6640625, 0.625],
    [0.5, 0.65625, 0.5],
    [0.0, 0.625, 0.625],
    [0.5, 0.5, 0.5],
]


@pytest.mark.parametrize(
    ("gae_lambda", "advantages"),
    [(1.0, _NSTEP_ADVANTAGES), (0.5, _GAE_ADVANTAGES)],
    ids=["nstep", "gae"],
)
def test_losses_of_a_hand_computed_batch(gae_lambda, advantages):
    learner = _blank_learner(gae_lambda=gae_lambda, entropy_coef=0.1)
    stats = learner.update([_hand_segment()])
    adv = np.array(advantages)  # and the value targets are adv + 1
    log2 = np.log(2.0)  # -log pi(a|s) of every action, and the entropy
    assert stats[M.ADVANTAGE_MEAN] == pytest.approx(adv.mean())
    assert stats[M.VALUE_MEAN] == pytest.approx(1.0) and stats[M.RHO_MEAN] == 1.0
    assert stats[M.LOSS_VALUE] == pytest.approx((adv**2).mean())
    assert stats[M.LOSS_POLICY] == pytest.approx(log2 * adv.mean())
    assert stats[M.ENTROPY] == pytest.approx(log2)
    assert stats[M.LOSS_ENTROPY] == pytest.approx(log2)  # H itself: unscaled, unnegated
    total = log2 * adv.mean() + 0.5 * (adv**2).mean() - 0.1 * log2
    assert stats[M.LOSS_TOTAL] == pytest.approx(total)
    assert learner.version == 1


def test_vtrace_weighs_by_the_current_over_the_behaviour_probability():
    # Behaviour probability 0.8, current 0.5 (uniform): every weight is 0.625 (< rho_bar).
    learner = _blank_learner(vtrace=True)
    stats = learner.update([_hand_segment(behaviour_logp=np.full((4, 3), np.log(0.8), np.float32))])
    assert stats[M.RHO_MEAN] == pytest.approx(0.625, rel=1e-6)


def test_rewards_are_clipped_then_scaled():
    # Rewards of 2: clipped to 1, then scaled by 0.5, they train as rewards of 0.5 do.
    def stats(rewards, **config):
        learner = _blank_learner(**config)
        return learner.update([_hand_segment(rewards=np.full((4, 3), rewards, np.float32))])

    clipped = stats(2.0, clip_rewards=True, reward_scale=0.5)
    halves = stats(0.5)
    for key in (M.ADVANTAGE_MEAN, M.LOSS_VALUE, M.LOSS_POLICY):
        assert clipped[key] == halves[key]
    assert stats(2.0, reward_scale=0.5)[M.ADVANTAGE_MEAN] != halves[M.ADVANTAGE_MEAN]


def test_normalized_advantages_are_reported_before_normalising():
    learner = _blank_learner(normalize_advantages=True)
    stats = learner.update([_hand_segment()])
    assert stats[M.ADVANTAGE_MEAN] == pytest.approx(np.mean(_NSTEP_ADVANTAGES))
    # Standardised advantages have mean 0, so the policy loss log 2 * mean(A) is 0.
    assert stats[M.LOSS_POLICY] == pytest.approx(0.0, abs=1e-6)


def test_the_stats_list_the_batch_episodes_and_frames():
    learner = Learner(LearnerConfig(), *SPACES)
    b = make_segment(obs_dim=4, b=2, truncate=()).replace(
        policy_version=0,
        episode_returns=np.array([9.5, 2.0], np.float32),
        episode_lengths=np.array([7, 2], np.int64),
    )
    stats = learner.update([_hand_segment(), b])
    assert stats[M.EPISODE_RETURN] == [3.0, 9.5, 2.0]
    assert stats[M.EPISODE_LENGTH] == [3, 7, 2]
    assert all(type(x) is int for x in stats[M.EPISODE_LENGTH])
    assert stats[M.BATCH_FRAMES] == 4 * 3 + 4 * 2
    assert stats[M.TRANSFER_TIME] + stats[M.COMPUTE_TIME] <= stats[M.UPDATE_TIME]
    # The actors' side of the batch: mean seconds per segment.
    assert stats[M.ACTOR_ENV_TIME] == 0.0 and stats[M.ACTOR_POLICY_TIME] == 0.0
    timed = [_hand_segment().replace(env_time_s=t, policy_time_s=t / 2) for t in (0.5, 1.5)]
    stats = Learner(LearnerConfig(), *SPACES).update(timed)
    assert (stats[M.ACTOR_ENV_TIME], stats[M.ACTOR_POLICY_TIME]) == (1.0, 0.5)


@pytest.mark.parametrize("num_cpus, num_threads, expected", [(1, 0, 1), (2.5, 0, 3), (1, 2, 2)])
def test_torch_threads_follow_the_learner_cpu_reservation(num_cpus, num_threads, expected):
    before = torch.get_num_threads()
    try:
        Learner(LearnerConfig(num_cpus=num_cpus, num_threads=num_threads), *SPACES)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
