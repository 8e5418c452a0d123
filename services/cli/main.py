"""`troupe`: train and evaluate A2C agents, locally or as jobs on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from learner.config import ConfigError
from services.cli import export, tune
from services.cli.cluster import add_commands
from services.cli.train import run_train
from services.cluster.jobs import JobApiError, JobNotFound
from services.config import RunConfig
from services.control.run_control import RunConflict, RunNotFound, json_safe


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from actors.evaluate import evaluate
    from services.storage.rundir import RunDir

    run = RunDir(args.run_dir)
    config = run.load_config()
    weights = run.load_model()
    if args.video:
        return _video(args, config, weights)
    returns = evaluate(
        config.env,
        config.learner.model,
        weights,
        args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
    )
    print(
        f"mean return {np.mean(returns):.2f} +/- {np.std(returns):.2f} over {args.episodes} "
        f"episodes (policy version {weights.version}, {config.env.id})"
    )
    return 0


def _video(args: argparse.Namespace, config, weights) -> int:
    import numpy as np

    from actors.video import record_episodes

    played = record_episodes(
        config.env,
        config.learner.model,
        weights,
        args.video,
        args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
    )
    for episode in played:
        print(f"{episode.file}: {episode.steps} steps, return {episode.episode_return:.2f}")
    returns = [e.episode_return for e in played]
    print(
        f"mean return {np.mean(returns):.2f} +/- {np.std(returns):.2f} over {len(played)} "
        f"recorded episodes (policy version {weights.version}, {config.env.id})"
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from services.storage.plot import plot_run

    out = plot_run(args.run_dir, args.out)
    print(f"troupe: wrote {out}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from services.storage.runs import scan, table

    rows = scan(args.run_root)
    if args.json:
        print(json.dumps([json_safe(row.__dict__) for row in rows], indent=1))
    elif rows:
        print(table(rows))
    else:
        print(f"troupe: no runs under {args.run_root}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: 1 to 128 ASCII letters, digits, '.', '-' and '_', not starting with '.' "
            "(it names the run directory and the checkpoint folder)"
        )
    return text


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="troupe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent (on a local Ray unless --address)")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--config", help="run config YAML (default: built-in CartPole defaults)")
    source.add_argument(
        "--resume",
        metavar="RUN_DIR|URL",
        help="continue a run from its latest readable checkpoint (its config, plus --set): "
        "its run directory, or STORAGE_URL/RUN_ID if that is lost",
    )
    train.add_argument(
        "--run-id",
        type=_run_id,
        help="a fixed run id (default: NAME-TIME-RANDOM): names the run directory under "
        "train.run_root and the checkpoint folder under checkpoint.storage. If that run has a "
        "checkpoint, it continues from the newest: a job run again after its driver or head "
        "node was lost picks up where it stopped",
    )
    train.add_argument(
        "--allow-env-import",
        action="store_true",
        help="with --resume STORAGE_URL/RUN_ID: let the checkpoint's env.id import its module",
    )
    train.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, repeatable"
    )
    train.add_argument("--no-progress", action="store_true", help="no live progress bar")
    train.set_defaults(func=run_train)

    ev = sub.add_parser("eval", help="evaluate a finished run's model")
    ev.add_argument("run_dir", help="run directory written by `troupe train`")
    ev.add_argument("--episodes", type=_positive, default=20)
    ev.add_argument("--seed", type=_non_negative, default=2024)
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of argmax")
    ev.add_argument(
        "--video",
        metavar="DIR",
        help="record each episode as DIR/ENV-episode-N.mp4 (one env at a time; '.[video]')",
    )
    ev.set_defaults(func=_eval)

    plot = sub.add_parser("plot", help="PNG of a run's learning curve and throughput")
    plot.add_argument("run_dir", help="run directory")
    plot.add_argument("--out", help="PNG path (default: RUN_DIR/learning_curve.png)")
    plot.set_defaults(func=_plot)

    runs = sub.add_parser("runs", help="table of the runs under a run root, finished or not")
    runs.add_argument(
        "run_root", nargs="?", default=RunConfig().train.run_root, help="default: %(default)s"
    )
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.set_defaults(func=_runs)

    export.add_command(sub)
    tune.add_command(sub)

    schema = sub.add_parser(
        "schema",
        help="the run config's JSON Schema, for editors (configs/schema.json holds it)",
    )
    schema.set_defaults(func=_schema)

    add_commands(sub)
    return parser


def _schema(args: argparse.Namespace) -> int:
    from services.config_schema import schema_text

    sys.stdout.write(schema_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"troupe: config error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RunNotFound, JobNotFound) as err:
        # A missing run dir, an unreadable model, an unknown run or job, no cluster there.
        print(f"troupe: {err}", file=sys.stderr)
        return 2
    except (RunConflict, JobApiError) as err:
        print(f"troupe: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("troupe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
