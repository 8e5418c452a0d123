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


class _Log(list):
    def log(self, record):
        self.append(record)


def test_a_stop_while_an_update_lands_leaves_counters_and_metrics_lines_in_step(termination):
    """The final checkpoint is named after the counters; a stop between counting an update
    and logging its line once left a checkpoint one update past the metrics (seen in CI)."""
    from collections import deque
    from types import SimpleNamespace

    from learner import metrics as M
    from services.training import parts
    from services.training.counters import Counters

    def due(window, new_episodes):  # the stop arrives while the run decides on evaluating
        os.kill(os.getpid(), signal.SIGTERM)
        return False

    run = object.__new__(parts.RunParts)
    run.counters, run.run_dir = Counters(), _Log()
    run.learner = SimpleNamespace(needs_rollback=lambda stats: False)
    run.sampler = SimpleNamespace(close_batch=lambda rejections: None)
    run.evaluator = SimpleNamespace(due=due, seconds=0.0)
    run.fleet = SimpleNamespace(live=[0], pending=0, target=1)
    run.returns, run.lengths = deque(maxlen=10), deque(maxlen=10)
    run._frames_before = run._wall_before = 0
    run.started = 0.0
    stats = {M.REJECTIONS: [], M.BATCH_FRAMES: 8, M.EPISODE_RETURN: [1.0], M.EPISODE_LENGTH: [8]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parts, "TERMINATION", termination)
        with pytest.raises(SystemExit):
            run.landed(stats)
    # Not counted, not logged: the stopped run's final checkpoint says 0 updates, like its
    # metrics, and the resumed run trains the update again.
    assert run.run_dir == [] and run.counters.updates == run.counters.frames == 0
