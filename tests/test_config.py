"""Run config: YAML, overrides, and errors that name the field."""

from __future__ import annotations

import dataclasses

import pytest

from actors.config import ActorConfig, EnvConfig
from actors.envs import env_spaces
from learner.config import ConfigError, LearnerConfig, ModelConfig
from learner.model import build_model
from services.config import RunConfig, TrainConfig, from_dict, load_config
from services.tune.config import TuneConfig
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
        ("learner.device=cuda:99", "learner.device='cuda:99' is invalid"),
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


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ActorConfig(num_actors=True), "actors.num_actors=True is invalid: expected int"),
        (lambda: ActorConfig(segment_length=2.5), "actors.segment_length=2.5 is invalid"),
        (lambda: LearnerConfig(gamma="0.99"), "learner.gamma='0.99' is invalid: expected float"),
        (lambda: LearnerConfig(vtrace="yes"), "learner.vtrace='yes' is invalid"),
        (lambda: LearnerConfig(lr_schedule="cosine"), "expected one of 'constant', 'linear'"),
        (lambda: ModelConfig(hidden_sizes=(64, True)), "learner.model.hidden_sizes=(64, True)"),
        (lambda: ModelConfig(hidden_sizes=[64]), "expected a tuple of int (a list in YAML)"),
        (lambda: ModelConfig(normalize_obs=1), "learner.model.normalize_obs=1 is invalid"),
        (lambda: EnvConfig(kwargs=[("a", 1)]), "env.kwargs=[('a', 1)] is invalid"),
        (lambda: TrainConfig(target_return="high"), "train.target_return='high' is invalid"),
        (lambda: TuneConfig(seed=1.0), "tune.seed=1.0 is invalid: expected int | None"),
        (lambda: RunConfig(actors={"num_actors": 2}), "actors={'num_actors': 2} is invalid"),
    ],
)
def test_configs_built_in_python_are_type_checked_as_loading_checks(build, message):
    """The loader type-checks YAML before building; a config built directly in Python is held
    to the same types, so a bool or a fraction cannot pass a range check as a number."""
    with pytest.raises(ConfigError) as err:
        build()
    assert message in str(err.value)


def test_an_int_is_a_float_for_configs_built_in_python_as_in_yaml():
    assert LearnerConfig(max_grad_norm=1, vtrace=None).max_grad_norm == 1
    assert ModelConfig(hidden_sizes=(32,)).hidden_sizes == (32,)


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
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match=r"empty.yaml is empty: .* \(leave out --config"):
        load_config(empty)


def _alias_bomb(levels: int = 9) -> str:
    """Each level an anchored list of ten aliases of the one before: 10**levels values."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines)


def test_a_yaml_alias_bomb_is_refused_before_anything_is_built(tmp_path):
    """A few hundred bytes that expand to 10**9 values (in checkpoint.storage_options, which
    takes any mapping) used to pass validation and then hang the driver's first walk."""
    bomb = _alias_bomb()
    assert len(bomb) < 1000
    nested = "checkpoint:\n  storage_options:\n" + "\n".join(
        "    " + line for line in bomb.splitlines()
    )
    path = tmp_path / "bomb.yaml"
    path.write_text(nested)
    with pytest.raises(ConfigError, match=r"bomb.yaml expands to more than 10,000 values"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set .*: the value expands to more than"):
        load_config(None, ["checkpoint.storage_options={" + bomb.replace("\n", ", ") + "}"])


def test_deep_and_huge_yaml_are_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("env:\n  kwargs: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ConfigError, match="more than nesting allow.* 32 levels deep"):
        load_config(deep)
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: cartpole\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="huge.yaml is 2,000,015 bytes; a run config is at"):
        load_config(huge)


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


@pytest.mark.parametrize(
    "override, message",
    [
        ("actors.envs_per_actor=1000000000", "actors.envs_per_actor=1000000000 is invalid: at"),
        ("actors.segment_length=1000000000", "at most 100,000"),
        ("learner.model.hidden_sizes=[64, 1000000000]", "hidden_sizes=1000000000 is invalid"),
        ("train.eval_episodes=1000000000", "at most 100,000"),
        ("learner.num_threads=1000000000", "at most 1,024"),
        ("seed=1e30", "seed=1e+30 is invalid: at most 64-bit integers"),
        ("train.return_window=1e30", "train.return_window=1e+30 is invalid"),
        ("checkpoint.every_updates=" + "9" * 400, "every_updates=99999999999999999999..."),
        ("actors.num_cpus=.inf", "actors.num_cpus=inf is invalid: expected a finite number"),
        ("train.sample_timeout_s=.inf", "expected a finite number"),
        ("learner.entropy_coef=.nan", "learner.entropy_coef=nan is invalid"),
        ("checkpoint.storage=memory://x", "memory:// checkpoints vanish with it"),
        ("name=ééé", "1 to 64 ASCII letters"),
        ("name=" + "a" * 300, "1 to 64 ASCII letters"),
        (
            "checkpoint.storage_options={client_kwargs: {aws_secret_access_key: x}}",
            "client_kwargs.aws_secret_access_key",
        ),
        ("checkpoint.storage=s3://me:pw@bucket/runs", "a URL without user:password@"),
    ],
)
def test_values_that_would_fail_after_ray_started_are_refused_first(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "pw" not in str(err.value)  # a URL's password is never echoed


# --- JSON Schema ----------------------------------------------------------------------------


def _schema_errors(data) -> list[str]:
    import jsonschema

    from services.config_schema import run_config_schema

    validator = jsonschema.Draft202012Validator(run_config_schema())
    return [error.message for error in validator.iter_errors(data)]


def test_configs_schema_json_is_current():
    from services.config_schema import schema_text

    path = ROOT / "configs" / "schema.json"
    assert path.read_text() == schema_text(), "run: troupe schema > configs/schema.json"


def test_every_shipped_config_and_the_defaults_pass_the_schema():
    import yaml

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert "# yaml-language-server: $schema=schema.json" in path.read_text(), path
        assert _schema_errors(yaml.safe_load(path.read_text())) == [], path
    assert _schema_errors(load_config(None, []).to_dict()) == []


@pytest.mark.parametrize(
    ("override", "schema_says"),
    [
        ("actors.envs_per_actor=65537", "65537 is greater than the maximum of 65536"),
        ("learner.model.hidden_sizes=[64, 100000]", "100000 is greater than the maximum"),
        ("algo.mode=fast", "'fast' is not one of ['sync', 'async']"),
        ("learner.lr=fast", "'fast' is not of type 'number'"),
    ],
)
def test_the_schema_refuses_what_loading_refuses(override, schema_says):
    """An editor and `troupe train` agree: a value the schema flags is a config error too."""
    import yaml

    key, _, text = override.partition("=")
    data = load_config(None, []).to_dict()
    *path, field = key.split(".")
    node = data
    for part in path:
        node = node[part]
    node[field] = yaml.safe_load(text)
    assert any(schema_says in message for message in _schema_errors(data)), _schema_errors(data)
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_the_schema_refuses_unknown_keys_and_describes_fields():
    from services.config_schema import run_config_schema

    data = load_config(None, []).to_dict()
    data["learner"]["lrr"] = 0.001
    assert any("'lrr' was unexpected" in m for m in _schema_errors(data))
    learner = run_config_schema()["$defs"]["LearnerConfig"]["properties"]
    assert learner["device"]["description"].startswith("'auto'")
