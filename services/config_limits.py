"""What a run config may hold, checked before anything is built from it: YAML within size,
depth and alias-expansion caps (`read_yaml`), and numbers within declared bounds
(`check_bounds`). Config files, `--set` values and checkpoints' configs are untrusted input:
these turn a hostile or mistyped one into a `ConfigError` instead of a hang or a failure
after Ray has started."""

from __future__ import annotations

import math
import typing
from typing import Any

import yaml

from learner.config import ConfigError

MAX_YAML_BYTES = 1_000_000
"""A run config is a few hundred bytes; anything near this is not one."""
MAX_YAML_NODES = 10_000
"""Values in a config document with aliases expanded: a YAML alias bomb (aliases of aliases,
a few hundred bytes) expands to billions, which every later walk of the config would take."""
MAX_YAML_DEPTH = 32


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML from `source` (named in errors) within the caps above: too large, too deep
    or too many values once aliases are expanded is a `ConfigError`, before anything is built
    from it."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is {len(text):,} bytes; a run config is at most "
                          f"{MAX_YAML_BYTES:,}")  # fmt: skip
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(root, source)
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None


def _check_size(root: yaml.Node | None, source: str) -> None:
    """Walk the node graph as loading expands it (an alias is its anchor's node again)."""
    count, stack = 0, [(root, 1)] if root is not None else []
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES or depth > MAX_YAML_DEPTH:
            what = f"{MAX_YAML_NODES:,} values" if count > MAX_YAML_NODES else "nesting"
            raise ConfigError(
                f"{source} expands to more than {what} allow (aliases included): not a run "
                f"config (at most {MAX_YAML_NODES:,} values, {MAX_YAML_DEPTH} levels deep)"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend([(key, depth + 1), (value, depth + 1)])


LIMITS: dict[str, float] = {
    "seed": 2**32 - 1,
    "actors.num_actors": 10_000,
    "actors.envs_per_actor": 65_536,
    "actors.segment_length": 100_000,
    "actors.num_cpus": 1_024,
    "learner.num_cpus": 1_024,
    "learner.num_threads": 1_024,
    "learner.model.hidden_sizes": 65_536,
    "learner.max_policy_lag": 1_000_000,
    "train.total_frames": 10**15,
    "train.eval_episodes": 100_000,
    "train.target_streak": 1_000,
    "train.return_window": 1_000_000,
    "train.max_learner_restarts": 1_000_000,
    "train.max_nonfinite_updates": 1_000_000,
    "train.max_actor_failures": 1_000_000,
    "checkpoint.keep": 10_000,
    "algo.batch_segments": 1_000_000,
}
"""Upper bounds, declared in one place: far beyond any real run, so a value past one is a
typo or an attack that would otherwise pass validation and fail (or fill memory) after Ray
started. Every number of the config must also be finite, and every integer fit 64 bits."""


def check_bounds(name: str, hint: Any, value: Any) -> None:
    values = value if isinstance(value, list | tuple) else [value]
    limit = LIMITS.get(name)
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int | float | str):
            continue
        if isinstance(item, str):
            if float not in flat_types(hint) and int not in flat_types(hint):
                continue
            try:
                item = float(item)  # as the type hooks will read it
            except ValueError:
                continue
        integral = isinstance(item, int) or int in flat_types(hint)
        finite = isinstance(item, int) or math.isfinite(item)  # int: inf has no int form
        if integral and finite and not -(2**63) <= item < 2**63:
            text = str(item) if len(str(item)) <= 24 else f"{str(item)[:20]}..."
            raise ConfigError(f"{name}={text} is invalid: at most 64-bit integers")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name}={item!r} is invalid: expected a finite number")
        if limit is not None and item > limit:
            raise ConfigError(f"{name}={item!r} is invalid: at most {limit:,}")


def flat_types(hint: Any) -> tuple:
    """The plain types a hint admits: `float | None` -> (float, NoneType)."""
    args = typing.get_args(hint)
    return args if args and typing.get_origin(hint) is not tuple else (hint,)
