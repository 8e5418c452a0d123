"""A training run as a Ray Job's entrypoint:

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m services.job --config configs/cartpole.yaml [--set KEY=VALUE ...]

It joins the cluster the job runs on and trains as `troupe train` does. With `--run-id ID` a
job is safe to run again: after its driver or the head node was lost, the same job continues
from the newest checkpoint of run ID (kept off the head with `checkpoint.storage`). The job's
working dir is a temporary copy, so a relative `train.run_root` is kept under `~/troupe/` on
the node the driver runs on (the head node) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from learner.config import ConfigError
from services import cli

JOB_HOME = Path("~/troupe")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.job", description=__doc__)
    parser.add_argument("--config", help="run config YAML, relative to the job's working dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--run-id",
        help="a fixed run id: the job, submitted again (or retried by KubeRay) after its "
        "driver or head was lost, continues from that run's newest checkpoint",
    )
    parser.add_argument(
        "--tune", action="store_true", help="a search of the config's tune: section"
    )
    args = parser.parse_args(argv)

    from services.config import load_config

    try:
        root = load_config(args.config, args.set).train.run_root
    except ConfigError as err:
        print(f"troupe: config error: {err}", file=sys.stderr)
        return 2

    overrides = list(args.set)
    if not Path(root).expanduser().is_absolute():
        overrides.append(f"train.run_root={(JOB_HOME / root).expanduser()}")
    address = os.environ.get("RAY_ADDRESS", "auto")
    if args.tune and args.run_id:
        print("troupe: --run-id names one run; a search (--tune) names its trials", file=sys.stderr)
        return 2
    if args.tune:
        argv = ["tune", args.config or "", "--address", address]
    else:
        argv = ["train", "--address", address, "--no-progress"]
        if args.config:
            argv += ["--config", args.config]
    if args.run_id:
        argv += ["--run-id", args.run_id]
    for item in overrides:
        argv += ["--set", item]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
