"""`troupe runs`: finished, running and interrupted runs read from their folders alone."""

from __future__ import annotations

import json
import math
import os
import time

from learner import metrics as M
from services.cli import main
from services.config import load_config
from services.storage.rundir import RunDir
from services.storage.runs import RUNNING_WITHIN_S, scan


def _run(root, name: str, evals: list[float | None], start: float, cut: bool = False) -> RunDir:
    run = RunDir.create(root, name)
    run.write_config(load_config("configs/cartpole.yaml", [f"name={name}"]))
    lines = []
    for i, value in enumerate(evals):
        record = {M.UPDATES: i + 1, M.FRAMES: 2048 * (i + 1), M.WALL_TIME: 10.0 * (i + 1)}
        record[M.UNIX_TIME] = start + 10 * i
        if value is not None:
            record[M.EVAL_RETURN] = value
        lines.append(json.dumps(record))
    text = "\n".join(lines) + "\n" + ('{"learner/upd' if cut else "")
    (run.path / "metrics.jsonl").write_text(text)
    return run


def test_runs_are_listed_oldest_first_with_their_state_and_returns(tmp_path, capsys):
    now = time.time()
    done = _run(tmp_path, "done", [20.0, None, 480.0, 350.0], now - 7200)
    done.write_summary({"frames": 8192, "eval_return": 499.0, "wall_time_s": 41.0})
    live = _run(tmp_path, "live", [15.0, 30.0], now - 60)
    died = _run(tmp_path, "died", [None, 12.5, None], now - 3600, cut=True)
    old = now - 2 * RUNNING_WITHIN_S
    for name in ("metrics.jsonl", "config.yaml"):
        os.utime(died.path / name, (old, old))
    (tmp_path / "not-a-run").mkdir()

    rows = scan(tmp_path, now=now)
    assert [r.run for r in rows] == [done.path.name, died.path.name, live.path.name]
    by = {r.run.split("-")[0]: r for r in rows}
    assert by["done"].state == "finished" and by["done"].final_eval == 499.0
    assert by["done"].best_eval == 480.0 and by["done"].frames == 8192
    assert by["done"].wall_time_s == 40.0  # the last update's, not the summary's
    assert by["live"].state == "running" and by["live"].frames == 4096
    assert by["live"].best_eval == by["live"].final_eval == 30.0
    assert by["died"].state == "interrupted" and by["died"].frames == 3 * 2048
    assert by["died"].best_eval == 12.5 and by["died"].env == "CartPole-v1"

    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "run", "env", "state", "frames", "best", "eval", "final", "eval", "wall", "started"
    ]  # fmt: skip
    assert out[1].split()[:7] == [done.path.name, "CartPole-v1", "finished", "8,192", "480.0",
                                  "499.0", "0m40s"]  # fmt: skip
    assert main(["runs", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in listed] == ["finished", "interrupted", "running"]


def test_a_run_without_metrics_or_evaluations_shows_dashes(tmp_path, capsys):
    run = RunDir.create(tmp_path, "fresh")
    run.write_config(load_config(None, []))
    (row,) = scan(tmp_path)
    assert row.state == "running" and row.frames == 0 and math.isnan(row.best_eval)
    (row,) = scan(tmp_path, now=time.time() + 2 * RUNNING_WITHIN_S)
    assert row.state == "interrupted"  # it never logged an update
    assert main(["runs", str(tmp_path)]) == 0
    assert " - " in capsys.readouterr().out


def test_an_empty_or_missing_root_says_so(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    assert "no runs under" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
