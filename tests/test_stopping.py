"""SIGTERM as SystemExit, SIGINT as KeyboardInterrupt, held back inside a critical section."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

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


class _RunDir(list):
    path = Path("/nonexistent/run")

    def log(self, record):
        self.append(record)

    def close(self):
        pass


def _run_parts(stats=None, due=lambda window, new_episodes: False):
    """A `RunParts` with fakes for its parts: the learner's uncounted update is `stats` (an
    exception: raised, as the keeper raises Ray's); each final save keeps the counters it
    saw."""
    from collections import deque
    from types import SimpleNamespace

    from services.training import parts
    from services.training.counters import Counters

    run = object.__new__(parts.RunParts)
    run.counters, run.run_dir, run.record, run._unlogged = Counters(), _RunDir(), {}, None
    uncounted = [stats]
    run.learner = SimpleNamespace(
        needs_rollback=lambda stats: False,
        counted=uncounted.clear,
        uncounted=lambda: _answer(uncounted.pop()) if uncounted else None,
        kill=lambda: None,
    )
    run.saved = []
    run.checkpoints = SimpleNamespace(
        save=lambda learner, final: run.saved.append(run.counters.progress())
    )
    run.sampler = SimpleNamespace(close_batch=lambda rejections: None)
    run.evaluator = SimpleNamespace(due=due, seconds=0.0)
    run.fleet = SimpleNamespace(live=[0], pending=0, target=1, shutdown=lambda: None)
    run.trackers = SimpleNamespace(finish=lambda state, model: None)
    run.link = SimpleNamespace(close=lambda record, state: None)
    run.returns, run.lengths = deque(maxlen=10), deque(maxlen=10)
    run._frames_before = run._wall_before = 0
    run.started = 0.0
    return run


def _answer(stats):
    if isinstance(stats, BaseException):
        raise stats
    return stats


@pytest.fixture
def run_stops(termination):
    """The run's parts take their stops from `termination`."""
    from services.training import parts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parts, "TERMINATION", termination)
        yield


def _stats():
    from learner import metrics as M

    return {M.REJECTIONS: [], M.BATCH_FRAMES: 8, M.EPISODE_RETURN: [1.0], M.EPISODE_LENGTH: [8]}


def test_a_stop_while_an_update_lands_counts_and_logs_it_before_the_final_save(run_stops):
    """The learner has made the update when the run counts it; a stop in between (here while
    the run decides on evaluating) once left the final checkpoint's weights one update past
    its counters and metrics. The stopped run counts the update, writes its metrics line and
    then saves: all three agree."""
    from learner import metrics as M

    def due(window, new_episodes):
        os.kill(os.getpid(), signal.SIGTERM)
        return False

    stats = _stats()
    run = _run_parts(stats, due)
    with pytest.raises(SystemExit):
        run.landed(stats)
    assert run.counters.updates == 1 and run.run_dir == []  # counted, its line not written
    run.close("failed")
    assert [line[M.UPDATES] for line in run.run_dir] == [1]
    assert run.run_dir[0][M.FRAMES] == 8 and run.saved == [run.counters.progress()]
    assert run.saved[0]["updates"] == 1 and run.saved[0]["frames"] == 8


def test_an_update_in_flight_when_the_run_stops_is_counted_and_logged_once(run_stops):
    """Stopped while the learner was still updating (a plain or async round waits on its
    statistics): the final save counts that update from the learner's answer."""
    from learner import metrics as M

    run = _run_parts(_stats())
    run.close("failed")
    assert [line[M.UPDATES] for line in run.run_dir] == [1]
    assert run.saved[0]["updates"] == 1 and run.saved[0]["frames"] == 8
    quiet = _run_parts(None)  # the learner made nothing since the last count
    quiet.close("failed")
    assert quiet.run_dir == [] and quiet.saved[0]["updates"] == 0


def test_a_learner_that_cannot_finish_its_last_update_leaves_the_latest_checkpoint(run_stops):
    """Stopped while the learner's update hangs: the run waits for it once (the keeper's
    timeout), then writes no final checkpoint, which could hold that update's weights without
    its count if it finished meanwhile; the latest checkpoint stands."""
    import ray

    run = _run_parts(ray.exceptions.GetTimeoutError("no answer in 30 s"))
    run.close("failed")
    assert run.run_dir == [] and run.saved == [] and run.counters.updates == 0
