"""SIGTERM as SystemExit, held back inside a critical section."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from services.training.stopping import Termination


@pytest.fixture
def termination():
    stop = Termination()
    previous = signal.signal(signal.SIGTERM, stop.handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_outside_a_held_block_sigterm_is_system_exit_143(termination):
    with pytest.raises(SystemExit) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 143


def test_inside_a_held_block_it_waits_for_the_block_to_finish(termination):
    done = []
    with pytest.raises(SystemExit) as stop, termination.held():
        with termination.held():  # nested: only the outermost exit raises
            # From another thread, as Ray's and tensorboardX's threads may take it.
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
            sender.start()
            sender.join()
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"] and stop.value.code == 143
    with termination.held():  # nothing pending any more
        pass
