"""Hyper-parameters that change over a run: the learning rate and the entropy coefficient,
constant or decayed linearly to 0 over the run's frames (rl-baselines3-zoo's `lin_` values,
SB3's `progress_remaining`). Pure functions of the frames trained on so far."""

from __future__ import annotations

import typing
from typing import Literal

Schedule = Literal["constant", "linear"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)


def scheduled(kind: Schedule, base: float, frames: int, horizon_frames: int) -> float:
    """The value for an update that starts after `frames` frames of `horizon_frames`:

    constant: base
    linear:   base * max(0, 1 - frames / horizon_frames)   (base at the start, 0 at the end)
    """
    if kind == "constant":
        return base
    if kind != "linear":
        raise ValueError(f"schedule {kind!r} is not one of {SCHEDULES}")
    if horizon_frames <= 0:
        raise ValueError(f"a linear schedule needs the run's frames (> 0), got {horizon_frames}")
    return base * max(0.0, 1.0 - frames / horizon_frames)
