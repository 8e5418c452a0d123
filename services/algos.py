"""The training loop for a run's `algo.mode`."""

from __future__ import annotations

from services.async_a2c import AsyncA2C
from services.config import RunConfig
from services.sync_a2c import SyncA2C
from services.trainer import Trainer

LOOPS: dict[str, type[Trainer]] = {"sync": SyncA2C, "async": AsyncA2C}


def trainer_for(config: RunConfig) -> type[Trainer]:
    return LOOPS[config.algo.mode]
