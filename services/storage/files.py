"""Writing a local file whole or not at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """`path` holds `data` whole, or what it held before. Written to a temp file beside it,
    synced, renamed over it (the rename is the commit), then the folder synced so the rename
    survives a power cut. The temp name is this writer's own (two writers of one file never
    share it), and a failed write (a full disk) leaves no temp file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
