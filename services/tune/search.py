"""A search: checked before anything starts, run on Ray Tune, summed up as a table of trials
and the best trial's config as a YAML file `troupe train --config` takes as it is."""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from learner.config import ConfigError
from services.config import RunConfig, with_overrides
from services.tune.config import TuneConfig
from services.tune.trial import (
    RUN_DIR_KEY,
    TRIAL_DRIVER_CPUS,
    TrialSetup,
    run_trial,
    trial_resources,
    tune_key,
)

BEST_FILE, TRIALS_FILE = "best.yaml", "trials.json"
ERROR_CHARS = 300
PBT_KEYS = ("learner.", "actors.num_actors", "actors.segment_length", "actors.envs_per_actor")
"""What PBT may perturb: values a run continued from a checkpoint may change (the optimiser,
loss and return settings, the batch); never the env or the network (`learner.model.*`)."""


@dataclass(frozen=True)
class TrialRow:
    trial: str
    params: dict[str, Any]
    state: str
    best: float
    final: float
    frames: int
    wall_time_s: float
    run_dir: str
    error: str = ""


@dataclass(frozen=True)
class SearchResult:
    folder: Path
    trials: list[TrialRow]
    best: TrialRow | None
    best_config: Path | None


def check_search(config: RunConfig, tune_cfg: TuneConfig, cluster_cpus: float | None) -> None:
    """Every space's key and values against the config, the scheduler's rules, and whether
    one trial fits the cluster: all before anything starts."""
    spaces = tune_cfg.spaces()
    if not spaces:
        raise ConfigError("nothing to search: give at least one --param KEY=SPACE (or tune.params)")
    base = _base(config)
    for space in spaces:
        for value in space.probes():
            try:
                with_overrides(base, [f"{space.key}={json.dumps(value)}"])
            except ConfigError as err:
                raise ConfigError(f"--param {space}: {err}") from None
    if tune_cfg.scheduler == "pbt":
        for space in spaces:
            if not space.key.startswith(PBT_KEYS) or space.key.startswith("learner.model."):
                raise ConfigError(
                    f"--param {space}: PBT continues trials from other trials' checkpoints, "
                    f"which fixes the env and the network; it may perturb learner.* (not "
                    f"learner.model.*) and the actors' batch shape only"
                )
            if space.kind == "grid":
                raise ConfigError(f"--param {space}: PBT samples its population; use choice()")
    widest = trial_cpus(config, tune_cfg)
    if cluster_cpus is not None and widest > cluster_cpus:
        raise ConfigError(
            f"a trial needs {widest:g} CPUs together (its driver {TRIAL_DRIVER_CPUS:g}, the "
            f"learner, every actor: learner.num_cpus, actors.num_actors x actors.num_cpus) and "
            f"the cluster has {cluster_cpus:g}: no trial could ever start. Lower those, or "
            "search on a larger cluster (--address)"
        )


def trial_cpus(config: RunConfig, tune_cfg: TuneConfig) -> float:
    """CPUs the largest trial reserves (at the extremes of the spaces that size one)."""
    sizing = [s for s in tune_cfg.spaces() if s.key in ("actors.num_actors", "actors.num_cpus",
                                             "learner.num_cpus")]  # fmt: skip
    combos = [[]] + [[f"{s.key}={json.dumps(v)}"] for s in sizing for v in s.probes()]
    needs = []
    for overrides in combos:
        c = with_overrides(_base(config), overrides)
        needs.append(
            TRIAL_DRIVER_CPUS + c.learner.num_cpus + c.actors.num_actors * c.actors.num_cpus
        )
    return max(needs)


def _base(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    data.pop("tune", None)
    return data


def search_folder(config: RunConfig, name: str) -> Path:
    root = Path(config.train.run_root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"tune-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    folder.mkdir()
    return folder


def run_search(config: RunConfig, tune_cfg: TuneConfig, folder: Path) -> SearchResult:
    """Run the search on the connected Ray (checked with `check_search` first)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search import BasicVariantGenerator

    spaces = tune_cfg.spaces()
    frames = config.train.total_frames
    batch = config.actors.num_actors * config.actors.envs_per_actor * config.actors.segment_length
    interval = tune_cfg.perturbation_frames or max(frames // 10, batch)
    setup = TrialSetup(
        base=_base(config),
        search_dir=str(folder.resolve()),  # a trial runs in its own working dir
        name=config.name,
        metric=tune_cfg.metric,
        pbt=tune_cfg.scheduler == "pbt",
        checkpoint_updates=max(1, interval // batch),
    )
    time_attr = tune_key("perf/frames")
    if tune_cfg.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr=time_attr,
            # Past the run's own end (its last batch may overshoot total_frames): ASHA
            # stops a trial at max_t, before it could save its model and summary.
            max_t=frames + 2 * batch,
            grace_period=tune_cfg.grace_frames or max(frames // 10, 1),
            reduction_factor=2,
        )
    elif tune_cfg.scheduler == "pbt":
        scheduler = PopulationBasedTraining(
            time_attr=time_attr,
            perturbation_interval=interval,
            hyperparam_mutations={s.key: s.to_tune() for s in spaces if s.kind != "fixed"},
            quantile_fraction=0.5,
            log_config=True,
        )
    else:
        scheduler = FIFOScheduler()
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup), trial_resources(setup)
    )
    tuner = tune.Tuner(
        trainable,
        param_space={s.key: s.to_tune() for s in spaces},
        tune_config=tune.TuneConfig(
            metric=tune_key(tune_cfg.metric),
            mode=tune_cfg.mode,
            num_samples=tune_cfg.samples,
            scheduler=scheduler,
            # What Tune builds when given none, with the draws seeded (Tune ignores
            # max_concurrent_trials next to a search algorithm of this kind).
            search_alg=BasicVariantGenerator(
                max_concurrent=tune_cfg.max_concurrent, random_state=tune_cfg.seed
            ),
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(folder.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),  # a failing trial ends alone
            # PBT restores trials from others' checkpoints, which must outlive their
            # trial's next ones (Tune's own warning); other schedulers restore nothing.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if setup.pbt else 2),
        ),
    )
    with warnings.catch_warnings():
        # Tune suggests reusing trial actors under PBT; a troupe trial's learner and rollout
        # actors are its own run's and cannot carry over to another trial.
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        grid = tuner.fit()
    rows = [_row(result, tune_cfg) for result in grid]
    rows.sort(key=lambda r: r.trial)
    scored = [r for r in rows if math.isfinite(r.final)]
    sign = 1 if tune_cfg.mode == "max" else -1
    # Ranked by the last evaluation, what the trial's config ends with (a peak on the way
    # can be luck); the best on the way breaks ties.
    best = max(scored, key=lambda r: (sign * r.final, sign * r.best)) if scored else None
    best_file = None
    if best is not None:
        overrides = [f"{key}={json.dumps(value)}" for key, value in best.params.items()]
        best_config = with_overrides(_base(config), overrides)
        best_file = folder / BEST_FILE
        header = (
            f"# Best trial of {folder.name}: {best.trial}, {tune_cfg.metric} {best.final:.2f} "
            f"(final), {best.best:.2f} (best)\n# troupe train --config {best_file}\n"
        )
        best_file.write_text(header + yaml.safe_dump(_base(best_config), sort_keys=False))
    (folder / TRIALS_FILE).write_text(
        json.dumps([dataclasses.asdict(r) for r in rows], indent=1, default=str) + "\n"
    )
    return SearchResult(folder, rows, best, best_file)


def _row(result, tune_cfg: TuneConfig) -> TrialRow:
    metrics = result.metrics or {}
    key = tune_key(tune_cfg.metric)
    history = result.metrics_dataframe
    values = history[key].dropna().tolist() if history is not None and key in history else []
    pick = max if tune_cfg.mode == "max" else min
    params = {k: v for k, v in (result.config or {}).items()}
    return TrialRow(
        trial=str(metrics.get("trial_id", "?")),
        params=params,
        state="ERROR" if result.error else "TERMINATED",
        best=float(pick(values)) if values else math.nan,
        final=float(values[-1]) if values else math.nan,
        frames=int(metrics.get(tune_key("perf/frames"), 0)),
        wall_time_s=float(metrics.get(tune_key("perf/wall_time_s"), 0.0)),
        run_dir=str(metrics.get(RUN_DIR_KEY, "")),
        error=error_text(result.error) if result.error else "",
    )


def error_text(error: BaseException) -> str:
    """What ended a trial, in one line: the run's own error, not Ray's task wrapper (whose
    first line names only the trial's process)."""
    while getattr(error, "cause", None) is not None:  # RayTaskError -> what the task raised
        error = error.cause
    text = " ".join(str(error).split("Traceback (most recent call last)")[0].split()).rstrip(":")
    if len(text) > ERROR_CHARS:
        text = text[: ERROR_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}"


def table(result: SearchResult, metric: str) -> str:
    keys = sorted({k for r in result.trials for k in r.params})
    header = ["trial", *keys, f"final {metric}", "best", "frames", "wall s", "state"]
    rows = [header, ["---"] * len(header)]
    for r in result.trials:
        mark = " *" if result.best is not None and r is result.best else ""
        rows.append([
            r.trial + mark,
            *(_fmt(r.params.get(k)) for k in keys),
            _fmt(r.final), _fmt(r.best), f"{r.frames:,}", f"{r.wall_time_s:.0f}",
            r.state + (f": {r.error}" if r.error else ""),
        ])  # fmt: skip
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
