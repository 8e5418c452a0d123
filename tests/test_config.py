"""Run config: YAML, overrides, and errors that name the field."""

from __future__ import annotations

import dataclasses

import pytest

from actors.envs import env_spaces
from learner.config import ConfigError
from learner.model import build_model
from services.config import RunConfig, from_dict, load_config
from tests.conftest import ROOT

CARTPOLE = ROOT / "configs" / "cartpole.yaml"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_builds_its_env_and_model(path):
    """Each config loads, round-trips, and its env and network build (extras from [dev])."""
    cfg = load_config(path)
    assert from_dict(cfg.to_dict()) == cfg
    build_model(cfg.learner.model, *env_spaces(cfg.env))


def test_defaults_and_round_trip():
    cfg = load_config(None)
    assert cfg == RunConfig()
    assert from_dict(cfg.to_dict()) == cfg


def test_overrides_parse_yaml_values():
    cfg = load_config(
        CARTPOLE,
        [
            "learner.lr=3e-4",
            "actors.num_actors=3",
            "learner.model.hidden_sizes=[32, 16]",
            "train.target_return=null",
            "env.kwargs={max_episode_steps: 100}",
        ],
    )
    assert cfg.learner.lr == 3e-4
    assert cfg.actors.num_actors == 3
    assert cfg.learner.model.hidden_sizes == (32, 16)
    assert cfg.train.target_return is None
    assert cfg.env.kwargs == {"max_episode_steps": 100}


def test_yaml_scientific_notation_is_a_float(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learner:\n  lr: 1e-3\ntrain:\n  total_frames: 1e5\n")
    cfg = load_config(path)
    assert cfg.learner.lr == 1e-3
    assert cfg.train.total_frames == 100_000


def test_every_config_section_is_frozen():
    """Learner, actors and driver share sections by reference, checked once: none of them, at
    any depth, can be changed past that check."""
    sections = [RunConfig()]
    for section in sections:
        first = dataclasses.fields(section)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, first, getattr(section, first))
        sections += [v for v in vars(section).values() if dataclasses.is_dataclass(v)]
    names = {type(s).__name__ for s in sections}
    assert {"RunConfig", "LearnerConfig", "ModelConfig"} <= names and len(names) == len(sections)


@pytest.mark.parametrize(
    "override, message",
    [
        ("lerner.lr=1e-3", "unknown config key lerner; did you mean learner?"),
        ("learner.lrr=1e-3", "did you mean learner.lr?"),
        ("learner.lr=fast", "learner.lr='fast' is invalid: expected float"),
        ("learner.lr=5", "learner.lr=5.0 is invalid"),
        ("learner.optimizer=sgd", "learner.optimizer='sgd' is invalid: expected one of"),
        ("actors.num_actors=0", "actors.num_actors=0 is invalid: an integer from 1 to 4096"),
        ("actors.segment_length=2.5", "actors.segment_length=2.5 is invalid: expected int"),
        ("learner.normalize_advantages=1", "learner.normalize_advantages=1 is invalid"),
        ("learner.gamma=0", "learner.gamma=0.0 is invalid"),
        ("learner.device=tpu", "learner.device='tpu' is invalid"),
        ("learner.model.hidden_sizes=[]", "learner.model.hidden_sizes"),
        ("train.total_frames=-1", "train.total_frames=-1 is invalid"),
        ("train.target_streak=0", "train.target_streak=0 is invalid"),
        ("env.vectorization=async", "env.vectorization='async' is invalid"),
        ("name=a b", "name='a b' is invalid"),
        ("learner=3", "learner must be a mapping"),
        ("noequals", "expected KEY=VALUE"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CARTPOLE, [override])
    assert message in str(err.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.model.hidden_sizes=64", "expected a list"),
        ("actors.num_actors=true", "actors.num_actors=True is invalid: expected int"),
        ("train.total_frames=true", "train.total_frames=True is invalid"),
        ("seed=-1", "seed=-1 is invalid"),
    ],
)
def test_lists_booleans_and_seeds_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CARTPOLE, [override])
