"""What a trial reports to Tune, without Ray: under PBT every report carries the checkpoint
the run saved at that update, so whichever report PBT decides on can be exploited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner import metrics as M
from services.config import RunConfig, with_overrides
from services.storage.checkpoints import Checkpoints
from services.storage.rundir import RunDir
from services.tune.trial import CHECKPOINT_NOTE, Reporter, TrialSetup, trial_config, tune_key

EVERY = 4
"""The trial's checkpoint grid: a checkpoint every this many updates."""
BATCH = 128


def _run(tmp_path: Path, monkeypatch, pbt: bool, first_eval: int, updates: int) -> list[dict]:
    """Drive a Reporter as a run does (checkpoint, then on_update) and return what reached
    tune.report: each report's update, whether it had a checkpoint, and which."""
    from ray import tune

    reports: list[dict] = []

    def report(metrics, checkpoint=None):
        seen = {"updates": int(metrics[tune_key(M.UPDATES)]), "checkpoint": None}
        if checkpoint is not None:
            note = json.loads((Path(checkpoint.path) / CHECKPOINT_NOTE).read_text())
            seen["checkpoint"] = note["file"]
        reports.append(seen)

    monkeypatch.setattr(tune, "report", report)
    setup = TrialSetup(
        base={}, search_dir=str(tmp_path), name="t", metric=M.EVAL_RETURN, pbt=pbt,
        checkpoint_updates=EVERY,
    )  # fmt: skip
    run_dir = RunDir.create(tmp_path, "t")
    store = Checkpoints.for_run(run_dir.path)
    reporter = Reporter(setup, "trial_00000", run_dir, store)
    for update in range(1, updates + 1):
        record = {M.UPDATES: update, M.FRAMES: update * BATCH}
        if update >= first_eval:
            record[M.EVAL_RETURN] = float(update)
        if pbt and update % EVERY == 0:
            store.save({}, {"updates": update, "frames": update * BATCH}, {})
        reporter(record)
    reporter.finish()
    return reports


@pytest.mark.parametrize("first_eval", [1, 5, 6])
def test_under_pbt_every_report_carries_its_updates_checkpoint(tmp_path, monkeypatch, first_eval):
    """The first evaluation landing past the first checkpoint (5, 6) used to leave every
    later decision of PBT on a report without a checkpoint."""
    reports = _run(tmp_path, monkeypatch, pbt=True, first_eval=first_eval, updates=14)
    on_grid = [u for u in range(EVERY, 15, EVERY) if u >= first_eval]
    assert reports[:-1] == [{"updates": u, "checkpoint": f"ckpt-{u:09d}.pt"} for u in on_grid]
    # The run's last update, off the grid, is reported when the run ends.
    assert reports[-1] == {"updates": 14, "checkpoint": None}


def test_under_pbt_a_run_ending_on_the_grid_is_not_reported_twice(tmp_path, monkeypatch):
    reports = _run(tmp_path, monkeypatch, pbt=True, first_eval=1, updates=12)
    assert [r["updates"] for r in reports] == [4, 8, 12]


def test_other_schedulers_get_every_update_once_there_is_an_evaluation(tmp_path, monkeypatch):
    reports = _run(tmp_path, monkeypatch, pbt=False, first_eval=3, updates=7)
    assert reports == [{"updates": u, "checkpoint": None} for u in range(3, 8)]


@pytest.mark.parametrize("pbt", [True, False])
def test_pbt_trials_checkpoint_on_the_report_grid_only(tmp_path, pbt):
    """A timed save would move PBT's grid off the updates the trials report; other
    schedulers keep the user's checkpoint settings."""
    timed = ["checkpoint.every_s=30", "checkpoint.every_updates=7"]
    user = with_overrides(RunConfig().to_dict(), timed)
    setup = TrialSetup(
        base=user.to_dict(), search_dir=str(tmp_path), name="t", metric=M.EVAL_RETURN,
        pbt=pbt, checkpoint_updates=EVERY,
    )  # fmt: skip
    checkpoint = trial_config(setup, {"learner.lr": 1e-3}, 3).checkpoint
    if pbt:
        assert (checkpoint.every_updates, checkpoint.every_s) == (EVERY, 0)
    else:
        assert (checkpoint.every_updates, checkpoint.every_s) == (7, 30)
