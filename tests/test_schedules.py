"""Learning-rate and entropy-coefficient schedules: the pure function, and the learner
following them across updates and a checkpoint."""

from __future__ import annotations

import pytest

from actors.config import EnvConfig
from actors.envs import env_spaces
from learner import metrics as M
from learner.config import ConfigError, LearnerConfig
from learner.learner import Learner
from learner.schedules import scheduled
from services.config import load_config
from tests.conftest import sample_segments

SPACES = env_spaces(EnvConfig())


def test_constant_and_linear_by_hand():
    assert scheduled("constant", 7e-4, 999, 0) == 7e-4
    assert [scheduled("linear", 8.0, f, 100) for f in (0, 25, 50, 100, 150)] == [
        8.0,
        6.0,
        4.0,
        0.0,
        0.0,  # past the run's frames (a resume with more frames) it stays at 0
    ]
    with pytest.raises(ValueError, match="needs the run's frames"):
        scheduled("linear", 1.0, 0, 0)
    with pytest.raises(ValueError, match="not one of"):
        scheduled("cosine", 1.0, 0, 10)


def test_the_learner_decays_lr_and_entropy_coef_over_the_run_and_a_resume_continues():
    config = LearnerConfig(
        lr=1e-3, lr_schedule="linear", entropy_coef=0.02, entropy_schedule="linear"
    )
    segments = sample_segments(Learner(config, *SPACES, horizon_frames=1))
    frames = sum(s.frames for s in segments)  # per update
    learner = Learner(config, *SPACES, horizon_frames=4 * frames)
    seen = [learner.update(segments) for _ in range(2)]
    resumed = Learner(config, *SPACES, horizon_frames=4 * frames)
    resumed.load_state(learner.state())
    seen += [resumed.update(segments) for _ in range(2)]
    assert [s[M.LR] for s in seen] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert [s[M.ENTROPY_COEF] for s in seen] == pytest.approx([0.02, 0.015, 0.01, 0.005])
    assert resumed.optimizer.lr == pytest.approx(2.5e-4)


def test_constant_is_the_default_and_a_linear_schedule_needs_the_run_length():
    learner = Learner(LearnerConfig(lr=3e-4), *SPACES)
    stats = learner.update(sample_segments(learner))
    assert stats[M.LR] == 3e-4 and stats[M.ENTROPY_COEF] == 0.0
    with pytest.raises(ValueError, match="horizon_frames"):
        Learner(LearnerConfig(lr_schedule="linear"), *SPACES)


def test_a_schedule_is_named_in_the_config():
    assert load_config(None, ["learner.lr_schedule=linear"]).learner.lr_schedule == "linear"
    with pytest.raises(ConfigError, match="learner.entropy_schedule='cosine' is invalid"):
        load_config(None, ["learner.entropy_schedule=cosine"])
