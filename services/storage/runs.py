"""What `troupe runs` lists: every run directory under a run root, read from its files alone
(no Ray), so finished runs of last week show as well as the one training now."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from learner import metrics as M
from services.storage.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

RUNNING_WITHIN_S = 120.0
"""A run without a summary that wrote its metrics (or config) this recently is taken to be
training still; older, it was interrupted (`troupe train --resume RUN_DIR` continues it)."""


@dataclass(frozen=True)
class RunRow:
    run: str
    env: str
    state: str
    """'finished' (it wrote its summary), 'running', or 'interrupted'."""
    frames: int
    best_eval: float
    final_eval: float
    wall_time_s: float
    started: float
    """Unix time of its first metrics line (else of its config)."""


def scan(root: str | Path, now: float | None = None) -> list[RunRow]:
    """Runs under `root`, oldest first. Folders that are not run directories are skipped."""
    now = time.time() if now is None else now
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory (the run root: train.run_root)")
    rows = [read_run(p, now) for p in root.iterdir() if (p / CONFIG_FILE).is_file()]
    return sorted(rows, key=lambda r: (r.started, r.run))


def read_run(path: Path, now: float) -> RunRow:
    import yaml

    config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    env = str((config.get("env") or {}).get("id", "?"))
    first = last = {}
    evals: list[float] = []
    metrics = path / METRICS_FILE
    if metrics.is_file():
        with metrics.open() as f:
            for line in f:
                record = _parse(line)
                if record is None:
                    continue
                first = first or record
                last = record
                value = record.get(M.EVAL_RETURN)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    evals.append(float(value))
    summary = _summary(path)
    if summary is not None:
        state = "finished"
    elif now - _last_write(path) < RUNNING_WITHIN_S:
        state = "running"
    else:
        state = "interrupted"
    final = summary.get("eval_return") if summary else None
    final = final if isinstance(final, (int, float)) else (evals[-1] if evals else math.nan)
    started = first.get(M.UNIX_TIME, (path / CONFIG_FILE).stat().st_mtime)
    return RunRow(
        run=path.name,
        env=env,
        state=state,
        frames=int((summary or {}).get("frames", last.get(M.FRAMES, 0))),
        best_eval=max(evals) if evals else math.nan,
        final_eval=float(final),
        wall_time_s=float(last.get(M.WALL_TIME, (summary or {}).get("wall_time_s", 0.0))),
        started=float(started),
    )


def _last_write(path: Path) -> float:
    """When the run last wrote: its metrics, or its config before its first update."""
    files = [path / METRICS_FILE, path / CONFIG_FILE]
    return max(f.stat().st_mtime for f in files if f.is_file())


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a line cut by a run that died writing it
    return record if isinstance(record, dict) else None


def _summary(path: Path) -> dict | None:
    try:
        summary = json.loads((path / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def table(rows: list[RunRow]) -> str:
    header = ("run", "env", "state", "frames", "best eval", "final eval", "wall", "started")
    body = [
        (
            r.run,
            r.env,
            r.state,
            f"{r.frames:,}",
            _number(r.best_eval),
            _number(r.final_eval),
            _duration(r.wall_time_s),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)),
        )
        for r in rows
    ]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=True)]
    numeric = {3, 4, 5, 6}
    lines = []
    for cells in (header, *body):
        lines.append(
            "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _number(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"
