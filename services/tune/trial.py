"""One trial of a search: a whole troupe run (its learner and rollout actors) inside a Tune
trial, reporting every update (under PBT, every checkpoint).

Population-based training exploits through troupe's own checkpoints: every
`checkpoint_updates` updates the run saves one, and the trial hands a copy to Tune with a
note of whose it is. When PBT restarts a trial from another trial's checkpoint (exploit)
with perturbed values (explore), the trial starts a new run directory that continues from
that learner state and counters, and writes the step to the search's lineage.jsonl.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learner import metrics as M
from services.config import RunConfig, with_overrides
from services.storage.checkpoints import Checkpoint, Checkpoints
from services.storage.rundir import RunDir
from services.tracking.trackers import numbers

CHECKPOINT_NOTE = "troupe-trial.json"
LINEAGE_FILE = "lineage.jsonl"
RUN_DIR_KEY = "troupe/run_dir"
TRIAL_DRIVER_CPUS = 1.0
"""CPUs of a trial's own process (Tune's trainable: the run's driver, which evaluates)."""


def tune_key(metric: str) -> str:
    """A metrics.jsonl key as Tune sees it: Tune reads '/' in a result key as nesting."""
    return metric.replace("/", ".")


@dataclass(frozen=True)
class TrialSetup:
    base: dict[str, Any]
    """The searched config as plain data (its tune section cleared)."""
    search_dir: str
    """Trials' run directories go here, with lineage.jsonl."""
    name: str
    metric: str
    pbt: bool
    checkpoint_updates: int
    """PBT: a checkpoint (and a report with it) every this many updates."""


def trial_index(trial_id: str) -> int:
    """Tune's trial ids end in a running number: 'a1b2c_00003' -> 3."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def trial_config(setup: TrialSetup, params: dict[str, Any], index: int) -> RunConfig:
    overrides = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    overrides += [f"name={setup.name}-t{index:02d}", f"train.run_root={setup.search_dir}"]
    if setup.pbt:
        # Only on this grid, the updates the trial reports (see Reporter): a save on a
        # timer would move every later one off it.
        overrides += [
            f"checkpoint.every_updates={setup.checkpoint_updates}",
            "checkpoint.every_s=0",
        ]
    return with_overrides(setup.base, overrides)


def trial_resources(setup: TrialSetup):
    """Tune reserves a trial's driver, learner and actors together (one placement group),
    so a trial never waits for actors another trial holds."""
    from ray import tune

    from learner.remote import gpus_for

    def resources(params: dict[str, Any]):
        config = trial_config(setup, params, 0)
        learner = {"CPU": config.learner.num_cpus}
        if gpus := gpus_for(config.learner):
            learner["GPU"] = gpus
        actor = {"CPU": config.actors.num_cpus}
        bundles = [{"CPU": TRIAL_DRIVER_CPUS}, learner] + [actor] * config.actors.num_actors
        return tune.PlacementGroupFactory(bundles, strategy="PACK")

    return resources


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    from ray import tune

    from services.training import train

    trial_id = tune.get_context().get_trial_id()
    config = trial_config(setup, params, trial_index(trial_id))
    resume, note = _restored(tune.get_checkpoint())
    run_dir = RunDir.create(setup.search_dir, config.name)
    if note is not None:
        _lineage(setup, trial_id, run_dir, note, resume, params)
    ckpt = config.checkpoint
    store = Checkpoints.for_run(run_dir.path, ckpt.storage, ckpt.keep, ckpt.storage_options)
    reporter = Reporter(setup, trial_id, run_dir, store)
    train(config, run_dir, on_update=reporter, resume=resume)
    reporter.finish()


class Reporter:
    """The run's `on_update`: each update's numbers to Tune, with the latest evaluation
    carried between evaluations.

    Under PBT only the updates that saved a checkpoint are reported, each with its
    checkpoint, and the run's last update when it ends. PBT decides at the first result
    a perturbation interval after its last decision, and Tune's save for an exploit hands
    over the checkpoint of the result it decided on, or none: reporting every update, a
    first evaluation that landed after the first checkpoint put every decision on a
    result without one, and no trial ever exploited another."""

    def __init__(
        self, setup: TrialSetup, trial_id: str, run_dir: RunDir, store: Checkpoints
    ) -> None:
        self.setup, self.trial_id, self.run_dir, self.store = setup, trial_id, run_dir, store
        self.latest: dict[str, float] = {}
        self.reported_checkpoint: str | None = None
        self.held: dict[str, Any] | None = None
        """Under PBT: the latest metrics not reported, for `finish`."""

    def __call__(self, record: dict[str, Any]) -> None:
        from ray import tune

        self.latest.update({tune_key(k): v for k, v in numbers(record).items()})
        if tune_key(self.setup.metric) not in self.latest:
            return  # nothing to compare the trial on yet (no evaluation so far)
        metrics = {**self.latest, RUN_DIR_KEY: str(self.run_dir.path)}
        self.held = None
        if self.setup.pbt and record[M.UPDATES] % self.setup.checkpoint_updates:
            self.held = metrics
            return
        newest = self._new_checkpoint()
        if newest is None:
            tune.report(metrics)
            return
        name = posixpath.basename(newest)
        with tempfile.TemporaryDirectory() as folder:
            self.store.fs.get_file(newest, str(Path(folder) / name))  # local or remote
            note = {"trial": self.trial_id, "run": self.run_dir.path.name, "file": name}
            (Path(folder) / CHECKPOINT_NOTE).write_text(json.dumps(note))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        self.reported_checkpoint = newest

    def finish(self) -> None:
        """The run ended: its last numbers, where they were held back, are the trial's."""
        from ray import tune

        if self.held is not None:
            tune.report(self.held)
            self.held = None

    def _new_checkpoint(self) -> str | None:
        """Under PBT, the run's newest checkpoint, when one was saved since the last report
        of one."""
        if not self.setup.pbt:
            return None
        paths = self.store.paths()
        if not paths or paths[-1] == self.reported_checkpoint:
            return None
        return paths[-1]


def _restored(checkpoint) -> tuple[Checkpoint | None, dict[str, Any] | None]:
    """The troupe checkpoint in a Tune checkpoint, and the note of whose it is."""
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as folder:
        note = json.loads((Path(folder) / CHECKPOINT_NOTE).read_text())
        restored = Checkpoints(folder).latest()  # another trial's run: any run's is read
    if restored is None:
        raise RuntimeError(f"Tune checkpoint {checkpoint} holds no readable troupe checkpoint")
    return restored, note


def _lineage(
    setup: TrialSetup,
    trial_id: str,
    run_dir: RunDir,
    note: dict[str, Any],
    resume: Checkpoint,
    params: dict[str, Any],
) -> None:
    step = {
        "time": round(time.time(), 3),
        "trial": trial_id,
        "run": run_dir.path.name,
        "step": "exploit" if note["trial"] != trial_id else "restore",
        "from_trial": note["trial"],
        "from_run": note["run"],
        "checkpoint": note["file"],
        "frames": resume.counters.get("frames"),
        "updates": resume.counters.get("updates"),
        "params": params,
    }
    with open(Path(setup.search_dir) / LINEAGE_FILE, "a") as f:
        f.write(json.dumps(step) + "\n")
