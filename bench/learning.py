"""Learning table: each shipped config trained with several seeds, beside Stable-Baselines3's
A2C at rl-baselines3-zoo's hyper-parameters (run in the same command, on the same machine)
and the zoo's published A2C score.

Per troupe run: the config as shipped (its frame budget, its stopping target if it has one),
on one local Ray started here. Per SB3 run: `bench.zoo`'s settings for the env, at the zoo's
frames. After training, each final policy is evaluated on 20 fresh episodes neither run saw
(seeds from 100,000 + seed; deterministic actions unless the config says otherwise, as the
zoo reports, with the observation statistics frozen). Per config the table gives the mean
and spread over seeds of those final returns, the lowest seed's, the median frames and the
median wall-clock seconds (troupe: start-up, training and its own evaluations; SB3: env
set-up and training; Ray's start is printed, not counted).

    python -m bench.learning --seeds 5                              # classic control + box2d
    python -m bench.learning --seeds 5 --configs halfcheetah hopper walker2d  # '.[mujoco]'
    python -m bench.learning --seeds 3 --configs pong breakout --no-sb3      # GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np

from bench.common import add_overrides, start_local_ray, train
from bench.zoo import sb3_train_and_evaluate, zoo_row

CONFIGS = {
    name: f"configs/{name}.yaml"
    for name in (
        "cartpole", "cartpole_async", "lunarlander", "mountaincar", "pendulum",
        "halfcheetah", "hopper", "walker2d", "pong", "breakout",
    )
}  # fmt: skip
CLASSIC = ("cartpole", "lunarlander", "mountaincar", "pendulum")
FINAL_EPISODES = 20


def train_and_evaluate(path: str, seed: int, overrides: list[str]) -> dict:
    """One run of a shipped config on the connected Ray, then an independent evaluation of
    its final policy."""
    from actors.evaluate import evaluate
    from services.config import load_config

    config = load_config(path, [f"seed={seed}", *overrides])
    result, elapsed, _, weights = train(config)
    returns = evaluate(
        config.env,
        config.learner.model,
        weights,
        FINAL_EPISODES,
        seed=100_000 + seed,  # episodes the run's own evaluations never saw
        deterministic=config.train.deterministic_eval,
    )
    return {
        "seed": seed,
        "env": config.env.id,
        "final_return": float(np.mean(returns)),
        "final_return_std": float(np.std(returns)),
        "solved": result.solved,
        "target": config.train.target_return,
        "frames": result.frames,
        "seconds": elapsed,
        "fps": result.fps,
    }


def sb3_run(path: str, seed: int) -> dict | None:
    """SB3's A2C at the zoo's settings for the config's env; None where the zoo has none."""
    from services.config import load_config

    config = load_config(path, [f"seed={seed}"])
    row = zoo_row(config.env.id)
    if row is None or row.frames > 1_000_000 * 2:  # Atari: not in SB3's reach on a CPU here
        return None
    return sb3_train_and_evaluate(
        config.env.id, row, seed, FINAL_EPISODES, config.train.deterministic_eval
    )


def summary(runs: list[dict]) -> tuple[str, float]:
    """'mean ± sd (min)' of the seeds' final returns, and the median wall seconds."""
    finals = [r["final_return"] for r in runs]
    spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
    text = f"{statistics.mean(finals):.1f} ± {spread:.1f} ({min(finals):.1f})"
    return text, statistics.median(r["seconds"] for r in runs)


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    rows = [
        "| config | env | seeds | troupe: final return, mean ± sd (lowest seed) "
        "| troupe frames (median) | troupe wall s | SB3 A2C, zoo settings | SB3 wall s "
        "| SB3 / troupe wall | zoo A2C |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_system in results.items():
        ours = by_system.get("troupe", [])
        theirs = by_system.get("sb3", [])
        env = (ours or theirs)[0]["env"].rpartition(":")[2]
        row = zoo_row(env)
        zoo = (
            f"{row.score:g} at {row.frames / 1e6:g}M" if row and row.score is not None
            else (row.note if row else "-")
        )  # fmt: skip
        ours_text, ours_s = summary(ours) if ours else ("-", float("nan"))
        theirs_text, theirs_s = summary(theirs) if theirs else ("-", float("nan"))
        frames = f"{statistics.median(r['frames'] for r in ours):,.0f}" if ours else "-"
        cells = [
            name, env, str(max(len(ours), len(theirs))), ours_text, frames, _number(ours_s, 0),
            theirs_text, _number(theirs_s, 0), _number(theirs_s / ours_s, 2), zoo,
        ]  # fmt: skip
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def _number(value: float, digits: int) -> str:
    """A figure, or '-' where a system did not run."""
    return "-" if np.isnan(value) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(CLASSIC),
        help=f"shipped configs ({', '.join(CONFIGS)}) or paths to YAML files (a search's "
        "best.yaml)",
    )
    parser.add_argument(
        "--no-sb3", dest="sb3", action="store_false", help="troupe only (no SB3 runs)"
    )
    parser.add_argument(
        "--no-troupe", dest="troupe", action="store_false", help="SB3 only (no Ray)"
    )
    add_overrides(parser, "train.total_frames=200000")
    parser.add_argument(
        "--out", help="append every run's figures to this JSON-lines file as it ends"
    )
    parser.add_argument(
        "--table", nargs="+", metavar="JSONL", help="print the table of earlier --out files"
    )
    args = parser.parse_args()
    for name in args.configs:
        if name not in CONFIGS and not os.path.isfile(name):
            parser.error(f"--configs {name}: neither a shipped config nor a file")
    if args.table:
        return print(table(load(args.table)))

    import ray

    ray_start = start_local_ray() if args.troupe else 0.0
    results: dict[str, dict[str, list[dict]]] = {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    try:
        for name in args.configs:
            for seed in seeds:
                runs = {}
                path = CONFIGS.get(name, name)
                if args.troupe:
                    runs["troupe"] = train_and_evaluate(path, seed, args.overrides)
                if args.sb3 and (sb3 := sb3_run(path, seed)) is not None:
                    runs["sb3"] = sb3
                for system, run in runs.items():
                    results.setdefault(name, {}).setdefault(system, []).append(run)
                    print(name, system, run, flush=True)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps({"config": name, "system": system, **run}) + "\n")
    finally:
        if args.troupe:
            ray.shutdown()
    print(
        f"\nFinal policies on {FINAL_EPISODES} fresh episodes, {args.seeds} seeds; "
        f"{os.cpu_count()} cores; Ray start {ray_start:.1f}s (not counted)\n"
    )
    print(table(results))


def load(paths: list[str]) -> dict[str, dict[str, list[dict]]]:
    results: dict[str, dict[str, list[dict]]] = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                run = json.loads(line)
                results.setdefault(run["config"], {}).setdefault(run["system"], []).append(run)
    return results


if __name__ == "__main__":
    main()
