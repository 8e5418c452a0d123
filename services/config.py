"""The run configuration: one YAML file, frozen dataclasses, CLI overrides.

`load_config("configs/cartpole.yaml", ["learner.lr=1e-3"])` reads the file, applies the
overrides, checks every key against the dataclasses (unknown keys get a did-you-mean), converts
and type-checks values, and lets each component validate its own ranges. Every failure is a
`ConfigError` whose message names the field.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dacite

from actors.config import ActorConfig, EnvConfig
from learner.config import ConfigError, LearnerConfig, check_types, require, type_name
from services.config_limits import check_bounds, read_yaml
from services.tracking.config import LoggingConfig
from services.tune.config import TuneConfig


@dataclass(frozen=True)
class TrainConfig:
    """When training stops and how progress is judged."""

    total_frames: int = 2_000_000
    """Stop after this many environment frames."""
    target_return: float | None = None
    """Stop once evaluations reach this mean return (None: train to total_frames)."""
    target_streak: int = 3
    """Consecutive evaluations, each on fresh episodes, that must reach target_return; after
    one passes, the next update is evaluated too. More than one guards against stopping on a
    lucky evaluation."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    eval_interval_s: float = 2.0
    """Evaluate the newest policy at most this often while training (seconds); 0 disables."""
    deterministic_eval: bool = True
    """Evaluate the most probable action rather than a sample."""
    return_window: int = 100
    """Recent training episodes averaged into `rollout/episode_return`."""
    run_root: str = "runs"
    """Folder under which each run gets its own directory."""
    sample_timeout_s: float = 60.0
    """A rollout actor that has not delivered its segment this long after being asked is
    replaced, so one stuck actor cannot stall training."""
    compiled_graph: bool = True
    """Sync mode: run each round (weights out, segments in, the update) as a Ray Compiled
    Graph, several times faster than plain actor calls for small batches; false: plain
    calls. A round the graph cannot complete (an actor failed) runs plainly either way.
    The graph's idle participants wait by spinning, a core each: with a slow env (a
    simulator whose steps take milliseconds), plain calls train as fast on far fewer cores
    (README, *Small batches*)."""
    max_learner_restarts: int = 3
    """Times the learner may die and be restarted from the latest checkpoint."""
    max_nonfinite_updates: int = 5
    """Non-finite updates in a row (each skipped) before the learner is rolled back to the
    latest checkpoint; a second such run of them ends the run. 0: never roll back."""
    max_actor_failures: int = 10
    """Sampling rounds in a row in which some actor fails before the run gives up (an env
    that always crashes, say); each failed actor is replaced meanwhile."""

    def __post_init__(self) -> None:
        check_types(self, "train.")
        require(self.total_frames >= 1, "train.total_frames", self.total_frames, "an integer >= 1")
        require(
            self.target_return is None or math.isfinite(self.target_return),
            "train.target_return",
            self.target_return,
            "a finite number or null",
        )
        require(
            self.eval_episodes >= 1, "train.eval_episodes", self.eval_episodes, "an integer >= 1"
        )
        require(
            self.target_streak >= 1, "train.target_streak", self.target_streak, "an integer >= 1"
        )
        require(
            self.eval_interval_s >= 0,
            "train.eval_interval_s",
            self.eval_interval_s,
            "a number of seconds >= 0",
        )
        require(
            self.return_window >= 1, "train.return_window", self.return_window, "an integer >= 1"
        )
        require(
            self.sample_timeout_s > 0,
            "train.sample_timeout_s",
            self.sample_timeout_s,
            "a number of seconds > 0",
        )
        require(
            self.max_learner_restarts >= 0,
            "train.max_learner_restarts",
            self.max_learner_restarts,
            "an integer >= 0",
        )
        require(
            self.max_nonfinite_updates >= 0,
            "train.max_nonfinite_updates",
            self.max_nonfinite_updates,
            "an integer >= 0",
        )
        require(
            self.max_actor_failures >= 0,
            "train.max_actor_failures",
            self.max_actor_failures,
            "an integer >= 0",
        )


@dataclass(frozen=True)
class CheckpointConfig:
    """When and where the run saves what it has learned."""

    every_updates: int = 200
    """Save after this many updates (0: not by count)."""
    every_s: float = 300.0
    """Save when this many seconds have passed since the last save (0: not by time)."""
    keep: int = 3
    """Checkpoints kept; older ones are deleted."""
    storage: str | None = None
    """Where checkpoints go. None: RUN_DIR/checkpoints/. Otherwise an absolute path or an
    fsspec URL (`s3://bucket/prefix`, needs the `s3` extra; `gs://`, with gcsfs), under which
    each run gets a folder named after its run directory. Remote storage outlives the node that
    holds the run directory."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """Passed to the filesystem, e.g. {endpoint_url: http://minio:9000} for an S3-compatible
    server. Keep credentials out of the config: s3fs reads them from the environment."""

    def __post_init__(self) -> None:
        check_types(self, "checkpoint.")
        if self.storage is not None:
            _check_storage(self.storage)
        secrets = sorted(_secret_keys(self.storage_options))
        require(
            not secrets,
            "checkpoint.storage_options",
            secrets,
            "no credentials: they would be written to config.yaml and every checkpoint. Set "
            "them in the environment (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        )
        require(
            self.every_updates >= 0,
            "checkpoint.every_updates",
            self.every_updates,
            "an integer >= 0",
        )
        require(self.every_s >= 0, "checkpoint.every_s", self.every_s, "a number of seconds >= 0")
        require(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


@dataclass(frozen=True)
class AlgoConfig:
    """How the learner is fed."""

    mode: Literal["sync", "async"] = "sync"
    """sync (A2C): each update waits for one segment from every live actor, all sampled with
    the newest weights; exactly on-policy. async (A3C-style): the learner updates on the first
    `batch_segments` segments ready while every actor keeps sampling with the newest weights
    it has; no one waits, and V-trace corrects for the policy lag."""
    batch_segments: int = 0
    """async: segments per update; 0 takes half the live actors (at least 1)."""

    def __post_init__(self) -> None:
        check_types(self, "algo.")
        require(
            self.batch_segments >= 0,
            "algo.batch_segments",
            self.batch_segments,
            "an integer >= 0 (0: half the live actors)",
        )


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


def _secret_keys(options: Any, prefix: str = "") -> list[str]:
    """Dotted names of credential-like keys in `options`, at any depth."""
    if isinstance(options, dict):
        found = []
        for key, value in options.items():
            name = f"{prefix}{key}"
            found += [name] if _SECRET.search(str(key)) else _secret_keys(value, f"{name}.")
        return found
    if isinstance(options, list | tuple):
        return [k for i, v in enumerate(options) for k in _secret_keys(v, f"{prefix}{i}.")]
    return []


def _check_storage(storage: str) -> None:
    import fsspec

    protocol, sep, rest = storage.partition("://")
    if sep:
        require(
            protocol in fsspec.available_protocols() and bool(rest.strip("/")),
            "checkpoint.storage",
            storage,
            "an absolute path or a URL fsspec knows, e.g. s3://bucket/prefix",
        )
        require(
            protocol != "memory",
            "checkpoint.storage",
            storage,
            "storage that outlives the process (memory:// checkpoints vanish with it)",
        )
        require(
            "@" not in rest.partition("/")[0],
            "checkpoint.storage",
            "<a URL with credentials>",
            "a URL without user:password@ (it would be written to config.yaml and every "
            "checkpoint): set credentials in the environment",
        )
    else:
        require(
            Path(storage).expanduser().is_absolute(),
            "checkpoint.storage",
            storage,
            "an absolute path (a job's working directory is temporary) or a URL such as "
            "s3://bucket/prefix",
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs."""

    name: str = "run"
    """Run name; the run directory is named after it."""
    seed: int = 0
    """Seeds the learner's initialisation and every actor's envs and sampling."""
    env: EnvConfig = field(default_factory=EnvConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        check_types(self, "")
        if self.learner.vtrace is None:  # on where the policies differ: async mode
            vtrace = self.algo.mode == "async"
            object.__setattr__(self, "learner", dataclasses.replace(self.learner, vtrace=vtrace))
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(
            _NAME.fullmatch(self.name) is not None,
            "name",
            self.name,
            "1 to 64 ASCII letters, digits, '-' and '_' (it names the run directory)",
        )

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a run config from YAML (defaults when `path` is None) and apply `k=v` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        data = read_yaml(text, str(path))
        if data is None:
            raise ConfigError(
                f"{path} is empty: a run config needs at least one section (leave out "
                "--config for the defaults)"
            )
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path} must hold a mapping of config sections, got {type(data).__name__}"
            )
    return with_overrides(data, overrides)


def with_overrides(data: dict[str, Any], overrides: typing.Sequence[str] = ()) -> RunConfig:
    """A run config from plain data (e.g. a checkpoint's) with `k=v` overrides applied."""
    data = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item)
    return from_dict(data)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a `RunConfig` from plain data."""
    _check_keys(RunConfig, data, "")
    try:
        return dacite.from_dict(
            RunConfig,
            data,
            config=dacite.Config(
                strict=True,
                cast=[tuple],
                type_hooks={float: _to_float, int: _to_int},
            ),
        )
    except dacite.WrongTypeError as err:
        raise ConfigError(
            f"{err.field_path}={err.value!r} is invalid: expected {type_name(err.field_type)}"
        ) from None
    except dacite.DaciteError as err:
        raise ConfigError(str(err)) from None


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. learner.lr=1e-3")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
    node[parts[-1]] = read_yaml(raw, f"--set {item!r}: the value") if raw.strip() else ""


def _check_keys(cls: type, data: Any, prefix: str) -> None:
    """Reject unknown keys, at any depth, with the closest known names."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        hint, name = hints[key], f"{prefix}{key}"
        if dataclasses.is_dataclass(hint) and value is not None:
            _check_keys(hint, value, f"{name}.")
        elif typing.get_origin(hint) is tuple and not isinstance(value, list | tuple):
            raise ConfigError(f"{name}={value!r} is invalid: expected a list, e.g. [64, 64]")
        else:
            check_bounds(name, hint, value)


def _to_float(value: Any) -> Any:
    # YAML 1.1 reads `1e-3` as a string; accept numeric strings and ints, leave the rest for
    # the type check to reject (booleans included).
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str | float):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
