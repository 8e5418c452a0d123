"""Continuous actions (a diagonal Gaussian policy) and observation normalisation, without Ray."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from actors.policy import ActorPolicy
from actors.rollout import RolloutWorker
from learner import metrics as M
from learner.config import ConfigError, LearnerConfig, ModelConfig
from learner.core import PolicyWeights
from learner.learner import Learner
from learner.model import ObsNormalizer

PENDULUM = EnvConfig(id="Pendulum-v1")


def _learner(**model) -> Learner:
    config = LearnerConfig(model=ModelConfig(**model), max_policy_lag=0)
    return Learner(config, *env_spaces(PENDULUM))


def _worker(learner: Learner, b=4, t=8, actor_id=0) -> RolloutWorker:
    config = ActorConfig(envs_per_actor=b, segment_length=t)
    worker = RolloutWorker(PENDULUM, config, learner.config.model, actor_id, seed=actor_id)
    worker.policy.load(learner.get_weights())
    return worker


def test_gaussian_log_probs_match_torch():
    """The actor's numpy sampling and log-density against torch.distributions."""
    learner = _learner(log_std_init=-0.5)
    policy = ActorPolicy(learner.config.model, *env_spaces(PENDULUM), seed=1)
    policy.load(learner.get_weights())
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    actions, logp = policy.act(obs)
    assert actions.shape == (64, 1) and actions.dtype == np.float32
    with torch.no_grad():
        dist = learner.model.distribution(learner.model(torch.from_numpy(obs))[0])
        expected = dist.log_prob(torch.from_numpy(actions)).numpy()
    np.testing.assert_allclose(logp, expected, rtol=1e-5, atol=1e-5)
    # Samples spread as the learned std says: log_std -0.5 -> std 0.61.
    assert np.std(actions - policy.act_greedy(obs)) == pytest.approx(np.exp(-0.5), rel=0.25)


def test_segments_carry_unclipped_actions_and_the_env_gets_clipped_ones():
    learner = _learner(log_std_init=2.0)  # std 7.4 on a [-2, 2] torque: most samples clip
    seg = _worker(learner).sample().validate()
    assert seg.actions.shape == (8, 4, 1) and seg.actions.dtype == np.float32
    assert np.abs(seg.actions).max() > 2.0  # as sampled, for the log-probs
    assert np.isfinite(seg.behaviour_logp).all()
    policy = _worker(learner).policy
    assert np.abs(policy.to_env(seg.actions[0])).max() <= 2.0


def test_learner_updates_a_gaussian_policy_and_its_std():
    learner = _learner()
    before = learner.model.log_std.detach().clone()
    segments = [_worker(learner, actor_id=i).sample() for i in range(2)]
    stats = learner.update(segments)
    assert stats[M.POLICY_VERSION] == 1 and stats[M.BATCH_FRAMES] == 64
    for key in (M.LOSS_POLICY, M.LOSS_VALUE, M.ENTROPY, M.GRAD_NORM):
        assert np.isfinite(stats[key])
    # Entropy of a 1-D Gaussian with log_std 0: 0.5 + 0.5 log(2 pi).
    assert stats[M.ENTROPY] == pytest.approx(0.5 + 0.5 * np.log(2 * np.pi), rel=1e-5)
    assert not torch.equal(learner.model.log_std.detach(), before)


def test_vtrace_on_policy_weights_are_one_for_gaussians():
    learner = Learner(LearnerConfig(vtrace=True), *env_spaces(PENDULUM))
    stats = learner.update([_worker(learner).sample()])
    assert stats[M.RHO_MEAN] == pytest.approx(1.0, abs=1e-4)


def test_continuous_segments_that_do_not_fit_the_model_are_left_out():
    learner = _learner()
    seg = _worker(learner).sample()
    wrong_dim = seg.replace(actions=np.zeros((8, 4, 2), np.float32))
    discrete = seg.replace(actions=np.zeros((8, 4), np.int64))
    good, reasons = learner.screen([seg, wrong_dim, discrete])
    assert good == [seg]
    assert "float32 (2,) per step; the model takes float32 (1,)" in reasons[0]
    assert "int64 () per step" in reasons[1]


def test_running_statistics_match_numpy_over_chunks():
    data = np.random.default_rng(3).normal(5.0, 3.0, size=(1000, 4))
    norm = ObsNormalizer(4)
    for chunk in np.array_split(data, 7):
        norm.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), data.var(0), rtol=1e-10)
    z = norm(torch.from_numpy(data).float()).numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_observation_statistics_travel_with_the_weights():
    learner = _learner(normalize_obs=True)
    worker = _worker(learner)
    learner.update([worker.sample()])
    weights = learner.get_weights()
    assert {"obs_norm.mean", "obs_norm.var", "obs_norm.count"} <= weights.params.keys()
    assert weights.params["obs_norm.count"] == 32  # the 8 x 4 observations acted on
    worker.policy.load(weights)
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        expected = learner.model(torch.from_numpy(obs))[0].numpy()
    np.testing.assert_allclose(worker.policy.act_greedy(obs), expected, rtol=1e-6)
    # Without normalisation nothing extra travels (older checkpoints stay loadable).
    assert not any(k.startswith("obs_norm") for k in _learner().get_weights().params)


def test_observation_statistics_merge_actors_resume_and_evaluate_as_trained(tmp_path):
    """Two actors' segments fold into one set of statistics equal to one stream over all their
    observations; a learner restored from the saved state continues them; an evaluation that
    loads only the saved weights (as `troupe eval` in a new process) normalises as training did."""
    from actors.evaluate import evaluate

    learner = _learner(normalize_obs=True)
    workers = [_worker(learner, actor_id=i) for i in (0, 1)]
    first = [w.sample() for w in workers]
    learner.update(first)
    seen = np.concatenate([s.obs[:-1].reshape(-1, 3) for s in first])
    norm = learner.model.obs_norm
    np.testing.assert_allclose(norm.mean.numpy(), seen.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), seen.var(0), rtol=1e-5)

    torch.save(learner.state(), tmp_path / "state.pt")
    resumed = _learner(normalize_obs=True)
    resumed.load_state(torch.load(tmp_path / "state.pt", weights_only=False))
    assert resumed.model.obs_norm.count == 64
    second = [w.sample() for w in workers]
    resumed.update(second)
    seen = np.concatenate([seen, *(s.obs[:-1].reshape(-1, 3) for s in second)])
    assert resumed.model.obs_norm.count == 128
    np.testing.assert_allclose(resumed.model.obs_norm.mean.numpy(), seen.mean(0), rtol=1e-6)

    weights = resumed.get_weights()
    np.savez(tmp_path / "model.npz", **weights.params)
    params = dict(np.load(tmp_path / "model.npz"))
    fresh = ActorPolicy(resumed.config.model, *env_spaces(PENDULUM), seed=0)
    fresh.load(PolicyWeights(version=weights.version, params=params))
    obs = np.random.default_rng(2).normal(3.0, 2.0, size=(6, 3)).astype(np.float32)
    with torch.no_grad():
        trained = resumed.model(torch.from_numpy(obs))[0][:, :1].numpy()
    np.testing.assert_allclose(fresh.act_greedy(obs), trained, rtol=1e-5, atol=1e-6)
    returns = evaluate(PENDULUM, resumed.config.model, weights, 2, seed=5)
    assert returns.shape == (2,) and np.isfinite(returns).all()


def test_an_unbounded_box_is_refused():
    with pytest.raises(ValueError, match="finite bounds"):
        Learner(LearnerConfig(), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-np.inf, np.inf, (1,)))


def test_gsde_log_probs_match_the_learners_distribution():
    learner = _learner(exploration="gsde", log_std_init=-1.0)
    assert learner.model.log_std.shape == (64, 1)
    policy = ActorPolicy(learner.config.model, *env_spaces(PENDULUM), seed=1)
    policy.load(learner.get_weights())
    obs = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    policy.new_noise(32)
    actions, logp = policy.act(obs)
    with torch.no_grad():
        out = learner.model(torch.from_numpy(obs))[0]
        assert out.shape == (32, 2)  # mean and a per-state std
        dist = learner.model.distribution(out)
        expected = dist.log_prob(torch.from_numpy(actions)).numpy()
    np.testing.assert_allclose(logp, expected, rtol=1e-5, atol=1e-5)


def test_gsde_noise_is_fixed_within_a_segment_and_spreads_as_its_std_says():
    """Same state, same matrix: the same action until new noise is drawn. Over many draws
    the action at one state is N(mean, sqrt(sum_f h_f^2 exp(2 log_std_f)))."""
    learner = _learner(exploration="gsde", log_std_init=-1.0)
    policy = ActorPolicy(learner.config.model, *env_spaces(PENDULUM), seed=2)
    policy.load(learner.get_weights())
    state = np.array([[0.3, -0.9, 1.5]], dtype=np.float32)
    policy.new_noise(1)
    first, _ = policy.act(state)
    again, _ = policy.act(state)
    assert first == again
    policy.new_noise(1)
    assert policy.act(state)[0] != first

    many = np.repeat(state, 20_000, axis=0)
    policy.new_noise(len(many))
    actions, _ = policy.act(many)
    with torch.no_grad():
        h = learner.model.policy_features(torch.from_numpy(state))[0].double().numpy()
    mean = policy.act_greedy(state)[0, 0]
    std = np.sqrt((h**2 * np.exp(2 * -1.0)).sum())
    assert actions.mean() == pytest.approx(mean, abs=4 * std / np.sqrt(len(many)))
    assert actions.std() == pytest.approx(std, rel=0.03)


def test_gsde_trains_its_matrix_of_log_stds_and_refuses_discrete_actions():
    learner = _learner(exploration="gsde", log_std_init=-2.0)
    before = learner.model.log_std.detach().clone()
    stats = learner.update([_worker(learner, actor_id=i).sample() for i in range(2)])
    assert stats[M.POLICY_VERSION] == 1 and np.isfinite(stats[M.GRAD_NORM])
    assert not torch.equal(learner.model.log_std.detach(), before)
    with pytest.raises(ConfigError, match="learner.model.exploration='gsde' needs a Box"):
        Learner(
            LearnerConfig(model=ModelConfig(exploration="gsde")),
            *env_spaces(EnvConfig(id="CartPole-v1")),
        )
    with pytest.raises(ConfigError, match="learner.model.exploration"):
        ModelConfig(exploration="ou")


@pytest.mark.parametrize("ortho_init", [True, False])
def test_ortho_init_false_keeps_pytorchs_default_init(ortho_init):
    """Orthogonal: zero biases, the policy head's rows orthogonal with norm 0.01. PyTorch's
    default (the zoo's `ortho_init=False`): uniform weights within 1/sqrt(fan_in), non-zero
    biases, and a policy head that is no longer near zero."""
    model = _learner(exploration="gsde", log_std_init=-2.0, ortho_init=ortho_init).model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 6  # two torsos of two layers, two heads
    head = model.policy_head.weight.detach()
    if ortho_init:
        assert all(not layer.bias.detach().any() for layer in layers)
        torch.testing.assert_close(head @ head.T, 1e-4 * torch.eye(head.shape[0]))
    else:
        for layer in layers:
            bound = 1 / layer.in_features**0.5
            assert layer.weight.detach().abs().max() <= bound and layer.bias.detach().any()
        assert head.abs().max() > 0.05
