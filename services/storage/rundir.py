"""A run directory: resolved config, one metrics line per update (and TensorBoard events),
the final model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from learner import metrics as M
from learner.core import PolicyWeights
from services.config import RunConfig, from_dict
from services.control.run_control import json_safe

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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._metrics = None
        self._events = None

    @classmethod
    def create(cls, root: str | Path, name: str) -> RunDir:
        root = Path(root).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = root / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a run directory under {root}")

    def write_config(self, config: RunConfig) -> None:
        text = yaml.safe_dump(config.to_dict(), sort_keys=False)
        (self.path / CONFIG_FILE).write_text(text)

    def load_config(self) -> RunConfig:
        file = self.path / CONFIG_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory: no {CONFIG_FILE}")
        return from_dict(yaml.safe_load(file.read_text()))

    def open_logs(self) -> None:
        """Open metrics.jsonl and the TensorBoard event file. A run does it before its clock
        starts: tensorboardX imports torch (over a second), which would otherwise be counted
        as training time on the first update."""
        if self._metrics is None:
            self._metrics = open(self.path / METRICS_FILE, "a", buffering=1)  # noqa: SIM115
            FileWriter, self._summary = _tensorboard()
            self._events = FileWriter(str(self.path), flush_secs=5)

    def log(self, record: dict[str, Any]) -> None:
        """Append one update's figures to metrics.jsonl, and its numbers to the TensorBoard
        event file beside it (step: frames)."""
        self.open_logs()
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
        tmp = self.path / (MODEL_FILE + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.path / MODEL_FILE)

    def load_model(self) -> PolicyWeights:
        file = self.path / MODEL_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} has no {MODEL_FILE}: did the run finish?")
        import torch

        try:
            payload = torch.load(file, weights_only=True)
            params = {k: v.numpy() for k, v in payload["params"].items()}
            return PolicyWeights(int(payload["version"]), params)
        except Exception as err:  # torch raises several types for a torn or foreign file
            raise ValueError(f"{file} is not a readable troupe model: {err}") from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._events.close()
            self._metrics = self._events = None
