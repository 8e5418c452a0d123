"""Checkpoints of a run: learner state, counters and config, written atomically, the last K
kept, a torn or corrupt one skipped in favour of the one before.

    RUN_DIR/checkpoints/ckpt-000000120.pt         (default; the number: updates done)
    s3://bucket/prefix/RUN_ID/ckpt-000000120.pt   (checkpoint.storage: s3://bucket/prefix)

Storage goes through fsspec, so any filesystem it has a driver for works (`s3fs` for s3://,
`gcsfs` for gs://, ...). A local folder is written with temp file, fsync, rename; an object
store gets one upload per checkpoint, which it makes visible whole or not at all.

A folder belongs to one run. Its owner marker (`.troupe-run`, the run id) is written when the
run claims it; a run refuses a folder another run owns, or one that holds files and no marker.
Each checkpoint carries its run id: a file of another run (copied or planted there) is never
loaded, and never counted or deleted when the run keeps its last K.
"""

from __future__ import annotations

import io
import json
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
OWNER_FILE = ".troupe-run"
"""The owner marker: `{"run_id": ...}`."""
PROBE_FILE = ".troupe-write-test"
TEMP = re.compile(r"\.ckpt-\d{9}\.pt\..+\.tmp")


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


class ForeignFolder(StorageError):
    """The checkpoint folder belongs to another run, or holds files that are no run's."""


class Checkpoints:
    """The checkpoint folder of one run, local or remote."""

    def __init__(
        self,
        location: str | Path,
        keep: int = 3,
        storage_options: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.location = str(location)
        self.keep = keep
        self.run_id = run_id
        """The run these checkpoints are of; None reads any run's (`troupe` always names one)."""
        self._owner: dict[str, bool] = {}
        """Path -> whether that checkpoint file is this run's, for the files seen so far."""
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
        """RUN_DIR/checkpoints, or STORAGE/RUN_ID when the run names a storage location. The
        run id is the run directory's name."""
        run_path = Path(run_path).resolve()  # `--resume .` is named too
        run_id = run_path.name
        if storage is None:
            return cls(run_path / FOLDER, keep, run_id=run_id)
        return cls(f"{storage.rstrip('/')}/{run_id}", keep, storage_options, run_id)

    def check(self) -> None:
        """Make sure the storage can be written, before any training is spent on it."""
        try:
            if self.local:  # (s3fs would create a missing bucket: a typo must fail instead)
                self.fs.makedirs(self.folder, exist_ok=True)
            probe = posixpath.join(self.folder, PROBE_FILE)
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as err:
            raise StorageError(
                f"checkpoint storage {self.location!r} cannot be written: {err}. Check "
                "checkpoint.storage, checkpoint.storage_options and the credentials in the "
                "environment"
            ) from None

    def claim(self, new: bool) -> None:
        """Make the folder this run's, or refuse it (`ForeignFolder`, see `verify`) before
        any training is spent on it. Checks that the storage can be written, too."""
        adopted = self.verify(new)
        self.check()  # it will be written to: read-only credentials fail now
        if adopted is None:
            return  # ours already
        marker = {"run_id": self.run_id, "adopted": adopted}
        try:
            self.fs.pipe_file(self._marker_path, json.dumps(marker).encode())
        except Exception as err:
            raise StorageError(f"cannot write {self._url(self._marker_path)}: {err}") from None
        if adopted:
            log.info("run %s adopts its checkpoint folder %s", self.run_id, self.location)

    def verify(self, new: bool) -> list[str] | None:
        """Raise `ForeignFolder` unless this run may write here, reading only. A `new` run (a
        fresh run id) takes only an empty folder: anything there is another run's (one of
        the same id, or no run's). A run continued by its id (a resume, `--run-id`) takes its
        own folder, or one from before owner markers that holds only checkpoints, which it
        adopts. Returns None for a folder already this run's, else the files it would adopt
        (none for an empty folder)."""
        if self.run_id is None:
            raise ValueError("verify() needs the run id these checkpoints are of")
        marker = self._marker()
        if marker is not None:
            owner = marker.get("run_id")
            if not new and owner == self.run_id:
                return None
            whose = (
                f"another run {owner!r}"
                if new
                else f"run {owner!r}, not to this run ({self.run_id!r})"
            )
            raise ForeignFolder(
                f"checkpoint folder {self.location} belongs to {whose}: two runs never share "
                "one. Continue that run by its own id (--resume, --run-id), or give this one "
                "another checkpoint.storage or run id"
            )
        # A leftover write probe, or the temp file of an interrupted local write
        # (`files.write_atomic`), is nobody's data.
        entries = [posixpath.basename(p.rstrip("/")) for p in self._ls()]
        entries = [e for e in entries if e != PROBE_FILE and not TEMP.fullmatch(e)]
        if entries and (new or not all(NAME.fullmatch(name) for name in entries)):
            raise ForeignFolder(
                f"checkpoint folder {self.location} is not empty ({', '.join(sorted(entries)[:5])}"
                f"{' ...' if len(entries) > 5 else ''}) and no run owns it: troupe does not "
                "write into (or prune) a folder it did not make. Point checkpoint.storage "
                "elsewhere, or empty that folder"
            )
        return sorted(entries)

    @property
    def _marker_path(self) -> str:
        return posixpath.join(self.folder, OWNER_FILE)

    def _marker(self) -> dict[str, Any] | None:
        """The folder's owner marker; None without one. One that cannot be read names no run,
        so nobody owns the folder but whoever wrote it."""
        try:
            data = self.fs.cat_file(self._marker_path)
        except FileNotFoundError:
            return None
        try:
            marker = json.loads(data)
        except ValueError:
            marker = None
        return marker if isinstance(marker, dict) else {"run_id": "<an unreadable marker>"}

    def _ls(self) -> list[str]:
        try:
            return self.fs.ls(self.folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []

    def save(self, learner: dict, counters: dict, config: dict) -> str:
        """Write a checkpoint and drop all but the newest `keep`. A crash at any point leaves
        either the old set or the old set plus a complete new file."""
        # torch here, not at the top: the driver needs it only from its first checkpoint on,
        # and importing it costs seconds of CPU that start-up shares with the Ray workers.
        import torch

        name = f"ckpt-{int(counters['updates']):09d}.pt"
        payload = {
            "format": FORMAT,
            "run_id": self.run_id,
            "learner": learner,
            "counters": counters,
            "config": config,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        if self.local:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            path = str(Path(self.folder) / name)
            write_atomic(Path(path), buffer.getbuffer())
        else:
            path = posixpath.join(self.folder, name)
            self.fs.pipe_file(path, buffer.getvalue())
        self._owner[path] = True
        try:
            for old in [p for p in self.paths() if self._is_ours(p)][: -self.keep]:
                self.fs.rm_file(old)
                self._owner.pop(old, None)
        except (OSError, UnsafeTorch) as err:  # the new one is saved; old ones linger
            log.warning("could not delete old checkpoints in %s: %s", self.location, err)
        return self._url(path)

    def _is_ours(self, path: str) -> bool:
        """Whether the checkpoint at `path` is this run's (read once, then remembered). Only
        ours count towards the `keep` and are pruned: a file this run did not write is not
        its to delete."""
        if path not in self._owner:
            try:
                data = self.fs.cat_file(path)  # another storage error: asked again next save
            except FileNotFoundError:  # deleted since listed
                return False
            try:
                self._owner[path] = self._owned(path, self._parse(data))
            except UnsafeTorch:
                raise
            except Exception:  # unreadable: a torn write, ours or anyone's; left alone
                self._owner[path] = False
        return self._owner[path]

    def _owned(self, path: str, payload: dict[str, Any]) -> bool:
        if self.run_id is None or payload.get("run_id") == self.run_id:
            return True
        if payload.get("run_id") is not None:
            return False
        # Written before checkpoints named their run: ours if the folder was adopted with it
        # (or is about to be: no marker yet), else anyone's, planted there.
        marker = self._marker()
        adopted = marker.get("adopted", []) if marker else [posixpath.basename(path)]
        return posixpath.basename(path) in adopted

    @staticmethod
    def _parse(data: bytes) -> dict[str, Any]:
        payload = load_weights(io.BytesIO(data))
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        if found != FORMAT:
            raise ValueError(f"format {found!r}, expected {FORMAT}")
        return payload

    def paths(self) -> list[str]:
        """Checkpoint files, oldest first (paths within the filesystem)."""
        return sorted(p for p in self._ls() if NAME.fullmatch(posixpath.basename(p)))

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint of this run that loads; torn ones and other runs' are logged
        and skipped. A storage error (network, permissions) is raised: skipping a checkpoint
        because S3 hiccupped would silently resume from an older one."""
        for path in reversed(self.paths()):
            url = self._url(path)
            try:
                data = self.fs.cat_file(path)
            except FileNotFoundError:  # deleted since listed
                continue
            try:
                payload = self._parse(data)
            except UnsafeTorch:
                raise  # not an unreadable file: the fix is an upgrade
            except Exception as err:  # torn write, bit rot, a foreign file: try the one before
                log.warning("skipping unreadable checkpoint %s: %s", url, err)
                continue
            self._owner[path] = self._owned(path, payload)
            if not self._owner[path]:
                log.warning("skipping %s: not a checkpoint of this run (%r) but of %r",
                            url, self.run_id, payload.get("run_id"))  # fmt: skip
                continue
            return Checkpoint(url, payload["learner"], payload["counters"], payload["config"])
        return None

    def _url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)
