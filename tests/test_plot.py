"""`troupe plot` and the TensorBoard events a run directory writes beside metrics.jsonl."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from learner import metrics as M
from services import cli
from services.config import load_config
from services.storage.plot import PLOT_FILE, plot_run
from services.storage.rundir import METRICS_FILE, RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RECORDS = [
    {M.FRAMES: 100, M.FPS: 50.0, M.EPISODE_RETURN: None, M.ACTORS_LIVE: 2, M.UPDATES: 1},
    {M.FRAMES: 200, M.FPS: 60.0, M.EPISODE_RETURN: None, M.ACTORS_LIVE: 2, M.UPDATES: 2},
    {
        M.FRAMES: 300,
        M.FPS: 70.0,
        M.EPISODE_RETURN: 12.5,
        M.EPISODE_LENGTH: 13.0,
        M.EVAL_RETURN: 20.0,
        M.ACTORS_LIVE: 3,
        M.UPDATES: 3,
    },
    {
        M.FRAMES: 400,
        M.FPS: 65.0,
        M.EPISODE_RETURN: 30.0,
        M.ACTORS_LIVE: 3,
        M.UPDATES: 4,
        M.LOSS_POLICY: math.nan,
    },
    {
        M.FRAMES: 500,
        M.FPS: 80.0,
        M.EPISODE_RETURN: 45.0,
        M.EPISODE_LENGTH: 46.0,
        M.EVAL_RETURN: 90.0,
        M.ACTORS_LIVE: 1,
        M.UPDATES: 5,
    },
]


def _run_dir(tmp_path: Path, records=RECORDS, overrides=()) -> RunDir:
    run = RunDir.create(tmp_path, "t")
    run.write_config(load_config(None, overrides))
    for record in records:
        run.log(record)
    run.close()
    return run


@pytest.fixture
def figures(monkeypatch) -> list[Figure]:
    """Every figure saved, kept for inspection."""
    saved: list[Figure] = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


# --- plot_run ---------------------------------------------------------------------------------


def test_plot_draws_returns_lengths_throughput_and_actors_against_frames(tmp_path, figures):
    run = _run_dir(tmp_path, overrides=["train.target_return=100"])
    plot_run(run.path)
    [fig] = figures
    ax_ret, ax_len, ax_fps, ax_act = fig.axes
    [lengths] = ax_len.lines
    assert list(lengths.get_xdata()) == [300, 500]
    assert list(lengths.get_ydata()) == [13.0, 46.0]
    training, evaluation, target = ax_ret.lines
    # Updates without a training return yet are left out, not drawn as zero.
    assert list(training.get_xdata()) == [300, 400, 500]
    assert list(training.get_ydata()) == [12.5, 30.0, 45.0]
    assert list(evaluation.get_xdata()) == [300, 500]
    assert list(evaluation.get_ydata()) == [20.0, 90.0]
    assert list(target.get_ydata()) == [100, 100]
    [fps] = ax_fps.lines
    assert list(fps.get_xdata()) == [100, 200, 300, 400, 500]
    assert list(fps.get_ydata()) == [50.0, 60.0, 70.0, 65.0, 80.0]
    [actors] = ax_act.lines
    assert list(actors.get_ydata()) == [2, 2, 3, 3, 1]
    assert ax_act.get_ylim() == (0, 4)
    assert run.path.name in ax_ret.get_title()
    assert "CartPole-v1" in ax_ret.get_title()


def test_plot_without_a_target_or_actor_counts(tmp_path, figures):
    records = [{k: v for k, v in r.items() if k != M.ACTORS_LIVE} for r in RECORDS]
    run = _run_dir(tmp_path, records)
    plot_run(run.path)
    [fig] = figures
    ax_ret, _ax_len, _ax_fps = fig.axes  # no twin axis for actors
    assert len(ax_ret.lines) == 2  # training and evaluation, no target line


def test_plot_of_a_run_that_has_not_evaluated_or_finished_an_episode(tmp_path, figures):
    records = [{M.FRAMES: 64 * i, M.FPS: 10.0 * i, M.EPISODE_RETURN: None} for i in (1, 2)]
    plot_run(_run_dir(tmp_path, records).path)
    [fig] = figures
    ax_ret, _ax_len, ax_fps = fig.axes
    training, evaluation = ax_ret.lines  # drawn empty, not as zeros
    assert list(training.get_xdata()) == list(evaluation.get_xdata()) == []
    [fps] = ax_fps.lines
    assert (list(fps.get_xdata()), list(fps.get_ydata())) == ([64, 128], [10.0, 20.0])


def test_plot_of_a_run_with_no_metrics_file_says_so(tmp_path):
    run = _run_dir(tmp_path, records=[])
    assert not (run.path / METRICS_FILE).exists()
    with pytest.raises(FileNotFoundError, match="no metrics"):
        plot_run(run.path)
    assert not (run.path / PLOT_FILE).exists()


def test_plot_of_a_run_with_an_empty_metrics_file_says_so(tmp_path):
    run = _run_dir(tmp_path, records=[])
    (run.path / METRICS_FILE).write_text("")
    with pytest.raises(ValueError, match="no metrics"):
        plot_run(run.path)


def test_plot_of_a_folder_that_is_not_a_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        plot_run(tmp_path)


def test_troupe_plot(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert cli.main(["plot", str(run.path)]) == 0
    assert capsys.readouterr().out.strip() == f"troupe: wrote {run.path / PLOT_FILE}"
    assert (run.path / PLOT_FILE).read_bytes()[:8] == PNG_MAGIC


def test_troupe_plot_out(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert cli.main(["plot", str(run.path), "--out", str(tmp_path / "x.png")]) == 0
    assert capsys.readouterr().out.strip() == f"troupe: wrote {tmp_path / 'x.png'}"
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_MAGIC
    assert not (run.path / PLOT_FILE).exists()


def test_troupe_plot_of_a_run_without_metrics_exits_2(tmp_path, capsys):
    run = _run_dir(tmp_path, records=[])
    assert cli.main(["plot", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "no metrics" in err
    assert "Traceback" not in err


# --- TensorBoard events -----------------------------------------------------------------------


def _events(run_dir: Path) -> list:
    """Every Event in the run's one TensorBoard file."""
    [file] = run_dir.glob("events.out.tfevents.*")
    return events_in(file)


def events_in(file: Path) -> list:
    """Every Event in a TensorBoard file, read through TFRecord framing: uint64 length,
    uint32 length CRC, data, uint32 data CRC (little-endian)."""
    from tensorboardX.proto.event_pb2 import Event

    data = file.read_bytes()
    events, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 12, "truncated record header"
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        start = pos + 12
        assert start + length + 4 <= len(data), "truncated record"
        event = Event()
        event.ParseFromString(data[start : start + length])
        events.append(event)
        pos = start + length + 4
    return events


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for event in _events(run_dir):
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_each_logged_number_is_a_tensorboard_scalar_stepped_by_frames(tmp_path):
    run = _run_dir(tmp_path)
    scalars = _scalars(run.path)
    assert scalars[M.FPS] == [(100, 50.0), (200, 60.0), (300, 70.0), (400, 65.0), (500, 80.0)]
    assert scalars[M.FRAMES] == [(r[M.FRAMES], r[M.FRAMES]) for r in RECORDS]
    assert scalars[M.ACTORS_LIVE] == [(100, 2), (200, 2), (300, 3), (400, 3), (500, 1)]
    # None is left out, not written as 0.
    assert scalars[M.EPISODE_RETURN] == [(300, 12.5), (400, 30.0), (500, 45.0)]
    assert scalars[M.EVAL_RETURN] == [(300, 20.0), (500, 90.0)]
    assert set(scalars) == {
        M.FPS,
        M.FRAMES,
        M.ACTORS_LIVE,
        M.EPISODE_RETURN,
        M.EPISODE_LENGTH,
        M.EVAL_RETURN,
        M.UPDATES,
        M.LOSS_POLICY,
    }


def test_a_non_finite_value_is_null_in_jsonl_and_kept_as_is_in_tensorboard(tmp_path, caplog):
    records = [
        {M.FRAMES: 10, M.LOSS_POLICY: math.nan, M.GRAD_NORM: math.inf, M.LOSS_VALUE: 0.5},
        {M.FRAMES: 20, M.LOSS_POLICY: 0.25, M.GRAD_NORM: 1.0, M.LOSS_VALUE: math.nan},
    ]
    run = _run_dir(tmp_path, records)
    lines = (run.path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {M.FRAMES: 10, M.LOSS_POLICY: None, M.GRAD_NORM: None, M.LOSS_VALUE: 0.5},
        {M.FRAMES: 20, M.LOSS_POLICY: 0.25, M.GRAD_NORM: 1.0, M.LOSS_VALUE: None},
    ]
    assert "NaN" not in lines[0] and "Infinity" not in lines[0]  # strict JSON
    scalars = _scalars(run.path)
    # TensorBoard takes NaN and inf (it shows them as such); the skipped update stays visible.
    [(step, loss), after] = scalars[M.LOSS_POLICY]
    assert step == 10 and math.isnan(loss)
    assert after == (20, 0.25)
    assert scalars[M.GRAD_NORM] == [(10, math.inf), (20, 1.0)]
    assert scalars[M.LOSS_VALUE][0] == (10, 0.5)
    assert math.isnan(scalars[M.LOSS_VALUE][1][1])
    assert "NaN or Inf" not in caplog.text  # on purpose, so not warned about


def test_only_numbers_go_to_tensorboard(tmp_path):
    records = [{M.FRAMES: 8, "flag": True, "label": "x", "list": [1, 2], M.FPS: 2.5}]
    run = _run_dir(tmp_path, records)
    assert set(_scalars(run.path)) == {M.FRAMES, M.FPS}
    assert run.read_metrics() == records


def test_a_record_without_frames_is_logged_at_step_0(tmp_path):
    run = _run_dir(tmp_path, [{M.FPS: 3.0}])
    assert _scalars(run.path) == {M.FPS: [(0, 3.0)]}
