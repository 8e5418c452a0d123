"""The `tune:` section of a run config and its search spaces (`troupe tune`).

A space is written as the CLI takes it, `KEY=SPACE`: `learner.lr=loguniform(1e-4,1e-2)`,
`actors.segment_length=choice(8,16,32)`, `learner.entropy_coef=uniform(0,0.01)`,
`actors.num_actors=randint(1,4)` (upper bound included), `learner.gamma=grid(0.95,0.99)`
(every value, times `samples`), or a plain value (fixed for every trial).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from learner.config import ConfigError, check_types, require

KINDS = ("uniform", "loguniform", "randint", "choice", "grid")
_SPACE = re.compile(r"\s*([a-z]+)\s*\((.*)\)\s*", re.S)
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _number(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as a string; a search space means the number."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


@dataclass(frozen=True)
class Space:
    key: str
    kind: str
    """One of KINDS, or 'fixed'."""
    values: tuple[Any, ...]
    """Bounds (uniform, loguniform, randint), the values (choice, grid, fixed)."""

    def to_tune(self):
        from ray import tune

        low, high = (*self.values, None, None)[:2]
        return {
            "uniform": lambda: tune.uniform(low, high),
            "loguniform": lambda: tune.loguniform(low, high),
            "randint": lambda: tune.randint(low, high + 1),  # Tune's upper bound is excluded
            "choice": lambda: tune.choice(list(self.values)),
            "grid": lambda: tune.grid_search(list(self.values)),
            "fixed": lambda: self.values[0],
        }[self.kind]()

    def probes(self) -> tuple[Any, ...]:
        """Values to try against the config before anything starts: the bounds, or each value."""
        return self.values

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.key}={self.values[0]!r}"
        return f"{self.key}={self.kind}({', '.join(map(str, self.values))})"


def parse_space(item: str) -> Space:
    """'KEY=SPACE' -> Space, or a ConfigError naming the key and what is wrong."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"--param {item!r}: expected KEY=SPACE, e.g. learner.lr=loguniform(1e-4,1e-2)"
        )
    match = _SPACE.fullmatch(text)
    if match is None and re.match(r"\s*[a-z]+\s*\(", text):
        raise ConfigError(f"--param {key}={text}: a space is NAME(ARGS), with its closing ')'")
    if match is None:
        try:
            value = _number(yaml.safe_load(text))
        except yaml.YAMLError as err:
            raise ConfigError(f"--param {key}: cannot read {text!r}: {err}") from None
        return Space(key, "fixed", (value,))
    kind, args = match.groups()
    if kind not in KINDS:
        raise ConfigError(
            f"--param {key}={text}: unknown space {kind!r}; use one of {', '.join(KINDS)}"
        )
    try:
        values = tuple(_number(v) for v in yaml.safe_load(f"[{args}]") or ())
    except yaml.YAMLError as err:
        raise ConfigError(f"--param {key}={text}: cannot read its arguments: {err}") from None
    _check(key, text, kind, values)
    return Space(key, kind, values)


def _check(key: str, text: str, kind: str, values: tuple) -> None:
    where = f"--param {key}={text}"
    if kind in ("choice", "grid"):
        if not values:
            raise ConfigError(f"{where}: {kind} needs at least one value")
        return
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numbers or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: {kind} takes two finite numbers, LOW and HIGH")
    low, high = values
    if not low < high:
        raise ConfigError(f"{where}: LOW must be below HIGH")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs LOW > 0")
    if kind == "randint" and not all(isinstance(v, int) for v in values):
        raise ConfigError(f"{where}: randint takes two integers")


@dataclass(frozen=True)
class TuneConfig:
    """`troupe tune`: a search over this config's values, every trial a whole run. `troupe
    train` ignores this section; CLI flags of `troupe tune` override it."""

    params: dict[str, Any] = field(default_factory=dict)
    """KEY: SPACE, e.g. {learner.lr: 'loguniform(1e-4,1e-2)'}."""
    samples: int = 4
    """Trials drawn (with grid spaces: draws per grid point)."""
    scheduler: Literal["fifo", "asha", "pbt"] = "fifo"
    """fifo: every trial runs to its end. asha: Asynchronous Successive Halving stops the
    worse trials early. pbt: Population Based Training copies good trials' learner state into
    worse ones (from troupe's checkpoints) and perturbs their values."""
    metric: str = "eval/episode_return"
    """The metric trials are compared on (a metrics.jsonl key); evaluations report the
    latest evaluation until the next."""
    mode: Literal["max", "min"] = "max"
    max_concurrent: int = 0
    """Trials running at once; 0: as many as the cluster fits."""
    grace_frames: int = 0
    """ASHA: frames every trial trains before it may be stopped; 0: a tenth of the run."""
    perturbation_frames: int = 0
    """PBT: frames between exploit-and-explore steps; 0: a tenth of the run."""
    seed: int | None = None
    """Seeds the draws from the spaces, so a search starts from the same trials again;
    null: fresh draws each search."""

    def __post_init__(self) -> None:
        check_types(self, "tune.")
        require(self.samples >= 1, "tune.samples", self.samples, "an integer >= 1")
        require(
            self.max_concurrent >= 0, "tune.max_concurrent", self.max_concurrent, "an integer >= 0"
        )
        for name in ("grace_frames", "perturbation_frames"):
            value = getattr(self, name)
            require(value >= 0, f"tune.{name}", value, "an integer >= 0 (0: a tenth of the run)")
        require(
            self.seed is None or self.seed >= 0,
            "tune.seed",
            self.seed,
            "an integer >= 0, or null for fresh draws",
        )
        require(
            all(isinstance(k, str) for k in self.params),
            "tune.params",
            self.params,
            "a mapping of KEY: SPACE",
        )
        for key, text in self.params.items():
            parse_space(f"{key}={text}")

    def spaces(self) -> list[Space]:
        return [parse_space(f"{key}={text}") for key, text in self.params.items()]
