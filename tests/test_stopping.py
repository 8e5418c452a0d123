"""SIGTERM as SystemExit, SIGINT as KeyboardInterrupt, held back inside a critical section."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from services.training.stopping import Termination


@pytest.fixture
def termination():
    stop = Termination()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def test_ctrl_c_is_keyboard_interrupt_held_back_the_same_way(termination):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), termination.held():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("finished")
    assert done == ["finished"]


def test_a_second_signal_while_one_is_held_back_is_raised_at_once(termination):
    done = []
    with pytest.raises(KeyboardInterrupt), termination.held():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("first held back")
        os.kill(os.getpid(), signal.SIGINT)
        done.append("never")
    assert done == ["first held back"]
    with termination.held():  # the first one is not raised again on the way out
        pass
