"""Checkpoints of a run: learner state, counters and config, written atomically, the last K
kept, a torn or corrupt one skipped in favour of the one before.

    RUN_DIR/checkpoints/ckpt-000000120.pt    (the number: updates done)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = 1
NAME = re.compile(r"ckpt-(\d{9})\.pt")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    learner: dict[str, Any]
    """`Learner.state()`."""
    counters: dict[str, Any]
    """frames, updates, episodes, wall_time_s, next_actor_id: where the run stood."""
    config: dict[str, Any]


class Checkpoints:
    """The checkpoint folder of one run."""

    def __init__(self, run_path: str | Path, keep: int = 3) -> None:
        self.folder = Path(run_path) / "checkpoints"
        self.keep = keep

    def save(self, learner: dict, counters: dict, config: dict) -> Path:
        """Write a checkpoint: temp file, fsync, rename, fsync the folder. A crash at any
        point leaves either the old set or the old set plus a complete new file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"ckpt-{int(counters['updates']):09d}.pt"
        tmp = path.with_suffix(".tmp")
        payload = {"format": FORMAT, "learner": learner, "counters": counters, "config": config}
        with open(tmp, "wb") as out:
            torch.save(payload, out)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        _fsync_dir(self.folder)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if NAME.fullmatch(p.name))

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads; unreadable ones are logged and skipped."""
        for path in reversed(self.paths()):
            try:
                payload = torch.load(path, weights_only=True)
                if payload.get("format") != FORMAT:
                    raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT}")
                return Checkpoint(path, payload["learner"], payload["counters"], payload["config"])
            except Exception as err:  # torn write, bit rot, a foreign file: try the one before
                log.warning("skipping unreadable checkpoint %s: %s", path, err)
        return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
