"""A run directory: resolved config, one metrics line per update (and TensorBoard events),
the final model."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import secrets
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from learner import metrics as M
from learner.config import ConfigError
from learner.core import PolicyWeights
from services.config import RunConfig, from_dict
from services.config_limits import read_yaml
from services.control.run_control import json_safe
from services.storage.files import write_atomic
from services.storage.untrusted import UnsafeTorch, load_weights

log = logging.getLogger(__name__)

LOST_LINES_WARN_EVERY = 1000
"""While writes keep failing, a warning every this many lost lines (and at the first)."""

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.pt"
SUMMARY_FILE = "summary.json"


def _tensorboard():
    """tensorboardX's (FileWriter, Summary), imported on first use: `troupe` commands that
    never log start without it."""
    from tensorboardX import FileWriter
    from tensorboardX.proto.summary_pb2 import Summary

    return FileWriter, Summary


class RunDir:
    """Files of one run. Metrics are appended and flushed line by line, so a run that dies
    keeps every update it logged."""

    def __init__(self, path: str | Path, new: bool = False) -> None:
        self.path = Path(path)
        self.new = new
        """Made by `create` for a new run (a fresh id), not an existing run's directory."""
        self._metrics = None
        self._events = None
        self.lost_lines = 0
        """Update lines that could not be written (metrics.jsonl or TensorBoard)."""
        self._purge_from: int | None = None

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        """A new run directory `NAME-YYYYmmdd-HHMMSS-XXXXXX` under `root`. Its name is the run's
        id, which also names its checkpoint folder in shared storage: the random part keeps
        it unique across machines that start runs of one name in the same second."""
        root = Path(root).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            path = root / f"{name}-{stamp}-{secrets.token_hex(3)}"
            try:
                path.mkdir()
                return cls(path, new=True)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a run directory under {root}")

    def write_config(self, config: RunConfig) -> None:
        """Write config.yaml whole or not at all (a temp file renamed over it): a resume
        rewrites it, and a crash halfway must not leave a cut one."""
        text = yaml.safe_dump(config.to_dict(), sort_keys=False)
        write_atomic(self.path / CONFIG_FILE, text.encode())

    def load_config(self) -> RunConfig:
        """The run's config. Written by troupe with every field, so a file that lacks one was
        cut or emptied: an error naming the file, never the defaults in its place."""
        file = self.path / CONFIG_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory: no {CONFIG_FILE}")
        data = read_yaml(file.read_text(), str(file))
        missing = _missing_fields(RunConfig, data)
        if missing:
            raise ConfigError(
                f"{file} is incomplete (cut or emptied?): it lacks {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; a run directory's config.yaml holds "
                "every field"
            )
        return from_dict(data)

    def rewind(self, updates: int, frames: int) -> None:
        """Go back to a checkpoint taken after `updates` updates (`frames` frames): the run
        died past it, and what it logged since is retrained. metrics.jsonl keeps its lines up
        to there (rewritten whole or not at all); TensorBoard is told to hide the later steps
        (a purge event, as tensorboardX's `purge_step`). Call before `open_logs`."""
        file = self.path / METRICS_FILE
        if file.is_file():
            lines = file.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _updates_of(line) <= updates]
            if len(kept) < len(lines):
                write_atomic(file, "".join(kept).encode())
                log.info("%s: %d lines past the checkpoint dropped", file, len(lines) - len(kept))
        self._purge_from = frames + 1

    def open_logs(self) -> None:
        """Open metrics.jsonl and the TensorBoard event file. A run does it before its clock
        starts: tensorboardX imports torch (over a second), which would otherwise be counted
        as training time on the first update."""
        if self._metrics is None:
            self._metrics = open(self.path / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
            FileWriter, self._summary = _tensorboard()
            self._events = FileWriter(str(self.path), flush_secs=5)
            if self._purge_from is not None:
                from tensorboardX.proto.event_pb2 import Event, SessionLog

                start = SessionLog(status=SessionLog.START)
                self._events.add_event(Event(step=self._purge_from, session_log=start))

    def log(self, record: dict[str, Any]) -> None:
        """Append one update's figures to metrics.jsonl, and its numbers to the TensorBoard
        event file beside it (step: frames)."""
        self.open_logs()
        try:
            self._write(record)
        except OSError as err:  # a full or failing disk: the run goes on, and says so
            self.lost_lines += 1
            if self.lost_lines == 1 or self.lost_lines % LOST_LINES_WARN_EVERY == 0:
                log.warning(
                    "could not write %s (%s); training goes on, %d update line(s) lost so far",
                    self.path / METRICS_FILE,
                    err,
                    self.lost_lines,
                )

    def _write(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        # One event holding every number (NaN and inf as they are, so a skipped update shows
        # in TensorBoard): a tenth of the driver's time per update that an event per scalar
        # took, which on a small machine comes out of the actors' and the learner's CPU.
        values = [
            self._summary.Value(tag=key, simple_value=value)
            for key, value in record.items()
            if key in M.TABLE and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self._events.add_summary(self._summary(value=values), global_step=record.get(M.FRAMES, 0))

    def read_metrics(self) -> list[dict[str, Any]]:
        file = self.path / METRICS_FILE
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def save_model(self, weights: PolicyWeights, frames: int) -> None:
        import torch  # here, not at the top: a driver that never saves starts without it

        state = {k: torch.from_numpy(np.array(v)) for k, v in weights.params.items()}
        payload = {"params": state, "version": weights.version, "frames": frames}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(self.path / MODEL_FILE, buffer.getvalue())

    def load_model(self) -> PolicyWeights:
        file = self.path / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} has no {MODEL_FILE}: did the run finish?")
        try:
            payload = load_weights(file)
            params = {k: v.numpy() for k, v in payload["params"].items()}
            return PolicyWeights(int(payload["version"]), params)
        except UnsafeTorch:
            raise  # not an unreadable file: the fix is an upgrade
        except Exception as err:  # torch raises several types for a torn or foreign file
            raise ValueError(f"{file} is not a readable troupe model: {err}") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._events.close()
            self._metrics = self._events = None


def _updates_of(line: str) -> float:
    """The update count of a metrics line; a cut last line (the run died writing it) counts
    as past every checkpoint."""
    try:
        return json.loads(line)[M.UPDATES]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _missing_fields(cls: type, data: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields of dataclass `cls` (at any depth) that `data` lacks."""
    if not isinstance(data, dict):
        return [prefix.rstrip(".") or "every section"]
    missing, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if f.name not in data:
            missing.append(name)
        elif dataclasses.is_dataclass(hints[f.name]):
            missing += _missing_fields(hints[f.name], data[f.name], f"{name}.")
    return missing
