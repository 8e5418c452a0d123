"""Pixel observations: Atari preprocessing, the Nature CNN torso and uint8 all the way to the
learner; and reward clipping. No Ray."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces, make_vector_env
from actors.evaluate import evaluate
from actors.rollout import RolloutWorker
from learner import metrics as M
from learner.config import ConfigError, LearnerConfig, ModelConfig
from learner.core import Segment
from learner.learner import Learner
from learner.model import build_model
from learner.torsos import NatureCNN

PONG = EnvConfig(
    id="ale_py:ALE/Pong-v5", preprocessing="atari", kwargs={"repeat_action_probability": 0.0}
)
FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


@pytest.mark.parametrize("vectorization", ["auto", "sync"])
def test_atari_preprocessing_gives_stacked_84x84_uint8_frames(vectorization):
    """ALE's native vector env (C++) and gymnasium's wrappers give the same observations."""
    config = EnvConfig(**{**PONG.__dict__, "vectorization": vectorization})
    env = make_vector_env(config, 2)
    try:
        obs, _ = env.reset(seed=0)
        assert env.single_observation_space == FRAMES
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        obs, *_ = env.step(np.zeros(2, dtype=np.int64))
        assert obs.dtype == np.uint8 and obs.max() > 0  # a frame, not a blank
    finally:
        env.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (EnvConfig(id="ale_py:ALE/Pong-v5"), "set env.preprocessing: atari"),
        (EnvConfig(id="CartPole-v1", preprocessing="atari"), "needs an Atari env"),
        (
            EnvConfig(
                id="ale_py:ALE/Pong-v5",
                preprocessing="atari",
                vectorization="sync",
                kwargs={"frameskip": 4},
            ),
            "env.kwargs.frameskip=4",
        ),
    ],
)
def test_preprocessing_that_cannot_apply_is_named(config, message):
    with pytest.raises(ValueError, match=message):
        make_vector_env(config, 1)


def test_preprocessing_value_is_validated():
    with pytest.raises(ConfigError, match="env.preprocessing"):
        EnvConfig(preprocessing="mnih")


def test_nature_cnn_layout_and_parameter_count():
    """Conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then 512 units: 1,684,128 parameters for 4 x 84 x
    84 input (counted by hand), plus the heads for Pong's 6 actions and the value."""
    model = build_model(ModelConfig(shared_trunk=True), FRAMES, gym.spaces.Discrete(6))
    assert model.torso_kind == "cnn" and model.value_torso is None
    torso = sum(p.numel() for p in model.policy_torso.parameters())
    assert torso == (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64) + (
        7 * 7 * 64 * 512 + 512
    )
    heads = sum(p.numel() for p in model.parameters()) - torso
    assert heads == 512 * 6 + 6 + 512 + 1
    out, values = model(torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
    assert out.shape == (3, 6) and values.shape == (3,)


def test_uint8_frames_are_scaled_to_unit_range_in_the_model():
    """Bytes in, the same features as the frames divided by 255 fed to a float-space CNN."""
    torch.manual_seed(0)
    cnn = NatureCNN(FRAMES)
    as_float = NatureCNN(gym.spaces.Box(0.0, 1.0, (4, 84, 84), np.float32))
    as_float.load_state_dict(cnn.state_dict())
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(cnn(frames), as_float(frames.float() / 255))
    # A float copy of the same bytes (as a cast on the way would give) is scaled the same.
    torch.testing.assert_close(cnn(frames.float()), cnn(frames))


def test_torso_choice_follows_the_observation_space():
    discrete = gym.spaces.Discrete(2)
    vector = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    assert build_model(ModelConfig(), vector, discrete).torso_kind == "mlp"
    assert build_model(ModelConfig(), FRAMES, discrete).torso_kind == "cnn"
    assert build_model(ModelConfig(torso="mlp"), FRAMES, discrete).torso_kind == "mlp"
    with pytest.raises(ConfigError, match="learner.model.torso='cnn' needs observations"):
        build_model(ModelConfig(torso="cnn"), vector, discrete)
    with pytest.raises(ConfigError, match="learner.model.normalize_obs"):
        build_model(ModelConfig(normalize_obs=True), FRAMES, discrete)
    with pytest.raises(ConfigError, match="learner.model.torso"):
        ModelConfig(torso="resnet")


def test_pong_segments_stay_uint8_into_the_learner_and_train():
    """Actor -> segment -> learner batch without a float copy; then a finite update."""
    config = LearnerConfig(model=ModelConfig(shared_trunk=True), entropy_coef=0.01)
    learner = Learner(config, *env_spaces(PONG))
    worker = RolloutWorker(PONG, ActorConfig(envs_per_actor=2, segment_length=5), config.model)
    worker.policy.load(learner.get_weights())
    segment = worker.sample().validate()
    assert segment.obs.dtype == np.uint8 and segment.obs.shape == (6, 2, 4, 84, 84)
    seen = []
    learner.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    stats = learner.update([segment, worker.sample()])
    assert seen and set(seen) == {torch.uint8}
    assert stats[M.POLICY_VERSION] == 1 and np.isfinite(stats[M.LOSS_TOTAL])
    worker.close()


def test_evaluation_feeds_pixels_as_uint8(monkeypatch):
    learner = Learner(LearnerConfig(model=ModelConfig(shared_trunk=True)), *env_spaces(PONG))
    seen = []
    original = NatureCNN.forward

    def spy(self, obs):
        seen.append(obs.dtype)
        return original(self, obs)

    monkeypatch.setattr(NatureCNN, "forward", spy)
    config = EnvConfig(**{**PONG.__dict__, "kwargs": {**PONG.kwargs, "frameskip": 32}})
    returns = evaluate(config, learner.config.model, learner.get_weights(), episodes=1, seed=3)
    assert set(seen) == {torch.uint8}
    # A whole game, scored as Pong scores (whole points), and the same again on its seed.
    assert returns[0].is_integer() and -21 <= returns[0] <= 21
    again = evaluate(config, learner.config.model, learner.get_weights(), episodes=1, seed=3)
    assert np.array_equal(again, returns)


def _segment(rewards: np.ndarray) -> Segment:
    t, b = rewards.shape
    obs = np.random.default_rng(0).normal(size=(t + 1, b, 4)).astype(np.float32)
    return Segment(
        obs=obs,
        actions=np.zeros((t, b), np.int64),
        rewards=rewards.astype(np.float32),
        terminated=np.zeros((t, b), bool),
        truncated=np.zeros((t, b), bool),
        valid=np.ones((t, b), bool),
        behaviour_logp=np.full((t, b), np.log(0.5), np.float32),
        final_obs=np.empty((0, 4), np.float32),
        final_index=np.empty(0, np.int64),
        episode_returns=np.asarray([rewards.sum()], np.float32),
        episode_lengths=np.asarray([t], np.int64),
        policy_version=0,
        actor_id=0,
    )


def test_clip_rewards_trains_on_the_sign_and_reports_the_score():
    spaces = env_spaces(EnvConfig(id="CartPole-v1"))
    raw = np.array([[7.0, -3.0], [0.0, 0.5], [-0.2, 21.0]])

    def run(rewards, clip):
        torch.manual_seed(0)
        learner = Learner(LearnerConfig(clip_rewards=clip), *spaces)
        return learner.update([_segment(rewards)])

    clipped, signs = run(raw, True), run(np.sign(raw), False)
    for name in (M.LOSS_POLICY, M.LOSS_VALUE, M.ADVANTAGE_MEAN):
        assert clipped[name] == pytest.approx(signs[name])
    assert run(raw, False)[M.LOSS_VALUE] != pytest.approx(signs[M.LOSS_VALUE])
    assert clipped[M.EPISODE_RETURN] == [pytest.approx(raw.sum())]
