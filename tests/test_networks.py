"""The actors' policy network against the learner's model: the numpy MLP must compute what
the torch `ActorCritic` computes, and an MLP actor must not need torch at all."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch

from actors.networks import NumpyMLP, TorchPolicy, policy_network
from learner.config import ModelConfig
from learner.model import build_model, state_to_numpy

VECTOR = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize(
    "model, actions",
    [
        (ModelConfig(), DISCRETE),
        (ModelConfig(hidden_sizes=(32, 16, 8), activation="relu", shared_trunk=True), DISCRETE),
        (ModelConfig(normalize_obs=True, log_std_init=-1.0), BOX),
        (ModelConfig(exploration="gsde", log_std_init=-2.0, normalize_obs=True), BOX),
    ],
    ids=["discrete", "deep-relu-shared", "gaussian-normalized", "gsde"],
)
def test_numpy_mlp_computes_what_the_torch_model_does(model, actions):
    torch.manual_seed(0)
    net = build_model(model, VECTOR, actions)
    rng = np.random.default_rng(0)
    if net.obs_norm is not None:  # statistics far from the identity, so they matter
        net.obs_norm.update(torch.from_numpy(rng.normal(3.0, 4.0, (256, 5))))
    obs = rng.normal(2.0, 5.0, (64, 5)).astype(np.float32)
    if net.obs_norm is not None:
        obs[:4] *= 100.0  # far outside the statistics: normalised, they are clipped
    policy = policy_network(model, VECTOR, actions)
    assert isinstance(policy, NumpyMLP)
    policy.load(state_to_numpy(net))
    with torch.no_grad():
        want_h = net.policy_features(torch.from_numpy(obs)).numpy()
        want_out = net(torch.from_numpy(obs))[0].numpy()
    h = policy.features(obs)
    assert h.dtype == np.float32 and policy.outputs(h).dtype == np.float32
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.outputs(h), want_out, rtol=1e-5, atol=1e-6)
    if actions is BOX:
        np.testing.assert_array_equal(policy.log_std, net.log_std.detach().numpy())


def test_pixels_take_the_torch_network():
    policy = policy_network(ModelConfig(), FRAMES, DISCRETE)
    assert isinstance(policy, TorchPolicy)
    net = build_model(ModelConfig(), FRAMES, DISCRETE)
    policy.load(state_to_numpy(net))
    obs = np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    with torch.no_grad():
        want = net(torch.from_numpy(obs))[0].numpy()
    np.testing.assert_allclose(policy.outputs(policy.features(obs)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.subprocess
def test_an_mlp_actor_never_imports_torch(tmp_path):
    """What buys its process seconds at start-up: Ray actors with an MLP policy run in
    numpy. A fresh interpreter builds a rollout worker and samples a segment."""
    model = ModelConfig()
    space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    from learner.core import PolicyWeights

    weights = PolicyWeights(3, state_to_numpy(build_model(model, space, gym.spaces.Discrete(2))))
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(weights))
    script = textwrap.dedent(
        f"""
        import pickle, sys
        from actors.config import ActorConfig, EnvConfig
        from actors.remote import RolloutActor
        from learner.config import ModelConfig
        weights = pickle.loads(open({str(path)!r}, "rb").read())
        actor = RolloutActor(
            EnvConfig(id="CartPole-v1"), ActorConfig(envs_per_actor=4, segment_length=8),
            ModelConfig(), actor_id=0, seed=0,
        )
        assert actor.ready() is True
        segment, frames = actor.sample(weights)
        segment.validate()
        assert frames == 32 and segment.policy_version == 3
        assert "torch" not in sys.modules, "the actor imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
