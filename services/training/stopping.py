"""SIGTERM (`troupe stop`, `ray job stop`) as SystemExit, held back where a stop would leave
the run inconsistent.

Blocking the signal with pthread_sigmask is not enough: it only masks the calling thread, and
Ray and tensorboardX run threads of their own. Any of them may take the signal, and Python
then runs the handler in the main thread at its next bytecode, inside the block or not. So
the handler itself checks whether a stop is held back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Termination:
    """Install `handler` for SIGTERM; wrap what must not be cut in half in `held()`."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None

    def handler(self, signum: int, frame: object) -> None:
        if self._depth:
            self._pending = signum
            return
        raise SystemExit(128 + signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A SIGTERM arriving inside is raised when the block is done."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                signum, self._pending = self._pending, None
                raise SystemExit(128 + signum)


TERMINATION = Termination()
"""The process's one SIGTERM state: signal handlers are process-wide."""
