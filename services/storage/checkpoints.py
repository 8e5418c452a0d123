"""Checkpoints of a run: learner state, counters and config, written atomically, the last K
kept, a torn or corrupt one skipped in favour of the one before.

    RUN_DIR/checkpoints/ckpt-000000120.pt         (default; the number: updates done)
    s3://bucket/prefix/RUN_ID/ckpt-000000120.pt   (checkpoint.storage: s3://bucket/prefix)

Storage goes through fsspec, so any filesystem it has a driver for works (`s3fs` for s3://,
`gcsfs` for gs://, ...). A local folder is written with temp file, fsync, rename; an object
store gets one upload per checkpoint, which it makes visible whole or not at all.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from services.storage.files import write_atomic
from services.storage.untrusted import UnsafeTorch, load_weights

log = logging.getLogger(__name__)

FORMAT = 1
NAME = re.compile(r"ckpt-(\d{9})\.pt")
FOLDER = "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    path: str
    """Where it was read from: a local path or a URL."""
    learner: dict[str, Any]
    """`Learner.state()`."""
    counters: dict[str, Any]
    """frames, updates, episodes, wall_time_s, next_actor_id: where the run stood."""
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class StorageError(OSError):
    """The checkpoint storage cannot be reached, or is refused to us."""


class Checkpoints:
    """The checkpoint folder of one run, local or remote."""

    def __init__(
        self,
        location: str | Path,
        keep: int = 3,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.location = str(location)
        self.keep = keep
        try:
            self.fs, self.folder = fsspec.core.url_to_fs(self.location, **(storage_options or {}))
        except ImportError as err:  # a known protocol whose driver is not installed
            raise StorageError(
                f"checkpoint.storage={self.location!r} needs a filesystem driver: {err} "
                "(for s3://: pip install -e '.[s3]')"
            ) from None
        except ValueError as err:  # an unknown protocol
            raise StorageError(f"checkpoint.storage={self.location!r}: {err}") from None
        self.local = isinstance(self.fs, LocalFileSystem)

    @classmethod
    def for_run(
        cls,
        run_path: str | Path,
        storage: str | None = None,
        keep: int = 3,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Checkpoints:
        """RUN_DIR/checkpoints, or STORAGE/RUN_ID when the run names a storage location."""
        run_path = Path(run_path).resolve()  # `--resume .` is named too
        if storage is None:
            return cls(run_path / FOLDER, keep)
        return cls(f"{storage.rstrip('/')}/{run_path.name}", keep, storage_options)

    def check(self) -> None:
        """Make sure the storage can be written, before any training is spent on it."""
        try:
            if self.local:  # (s3fs would create a missing bucket: a typo must fail instead)
                self.fs.makedirs(self.folder, exist_ok=True)
            probe = posixpath.join(self.folder, ".troupe-write-test")
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as err:
            raise StorageError(
                f"checkpoint storage {self.location!r} cannot be written: {err}. Check "
                "checkpoint.storage, checkpoint.storage_options and the credentials in the "
                "environment"
            ) from None

    def save(self, learner: dict, counters: dict, config: dict) -> str:
        """Write a checkpoint and drop all but the newest `keep`. A crash at any point leaves
        either the old set or the old set plus a complete new file."""
        # torch here, not at the top: the driver needs it only from its first checkpoint on,
        # and importing it costs seconds of CPU that start-up shares with the Ray workers.
        import torch

        name = f"ckpt-{int(counters['updates']):09d}.pt"
        payload = {"format": FORMAT, "learner": learner, "counters": counters, "config": config}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        if self.local:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            path = str(Path(self.folder) / name)
            write_atomic(Path(path), buffer.getbuffer())
        else:
            path = posixpath.join(self.folder, name)
            self.fs.pipe_file(path, buffer.getvalue())
        try:
            for old in self.paths()[: -self.keep]:
                self.fs.rm_file(old)
        except OSError as err:  # the new one is saved; old ones linger until the next save
            log.warning("could not delete old checkpoints in %s: %s", self.location, err)
        return self._url(path)

    def paths(self) -> list[str]:
        """Checkpoint files, oldest first (paths within the filesystem)."""
        try:
            found = self.fs.ls(self.folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(p for p in found if NAME.fullmatch(posixpath.basename(p)))

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads; torn or foreign ones are logged and skipped. A
        storage error (network, permissions) is raised: skipping a checkpoint because S3
        hiccupped would silently resume from an older one."""
        for path in reversed(self.paths()):
            url = self._url(path)
            try:
                data = self.fs.cat_file(path)
            except FileNotFoundError:  # deleted since listed
                continue
            try:
                payload = load_weights(io.BytesIO(data))
                if payload.get("format") != FORMAT:
                    raise ValueError(f"format {payload.get('format')!r}, expected {FORMAT}")
                return Checkpoint(url, payload["learner"], payload["counters"], payload["config"])
            except UnsafeTorch:
                raise  # not an unreadable file: the fix is an upgrade
            except Exception as err:  # torn write, bit rot, a foreign file: try the one before
                log.warning("skipping unreadable checkpoint %s: %s", url, err)
        return None

    def _url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)
