"""The `troupe` command: `main.py` builds the parser and maps errors to exit codes;
`train.py` runs `troupe train` (and `--resume`); `cluster.py` holds the commands for runs on a
cluster (submit, status, logs, stop, scale, metrics, serve)."""

from services.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
