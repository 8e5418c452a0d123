"""Reading a W&B offline run's records back (its `run-ID.wandb` file), for the tests: a
LevelDB-style log (32 KiB blocks of checksummed chunks) after a 7-byte W&B header, each
record a `wandb_internal_pb2.Record`. wandb no longer ships a reader of its own."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

BLOCK, CHUNK_HEADER, FILE_HEADER = 32768, 7, 7
FULL, FIRST, LAST = 1, 2, 4


def records(path: str | Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        body = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        parts = body if kind in (FULL, FIRST) else parts + body
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def history(path: str | Path) -> list[dict[str, str]]:
    """Each logged row: {key: JSON text of the value}."""
    return [
        {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        for r in records(path)
        if r.WhichOneof("record_type") == "history"
    ]


def finished(path: str | Path, timeout_s: float = 30.0) -> Path:
    """`path` once its exit record can be read. `run.finish()` returns when the W&B service
    has handled the exit, but the service writes the file's last block on its own time: on
    a loaded machine a test that read at once found a file without its history (CI, twice
    on a fresh venv)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in records(path)):
                return Path(path)
        except Exception:  # a chunk still being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record {timeout_s:.0f} s after finish()")
        time.sleep(0.1)
