"""`troupe tune`: spaces checked before anything starts; an ASHA search and a PBT search of
small CartPole trials on the shared cluster."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from learner.config import ConfigError
from services.cli import main
from services.config import load_config
from services.tune.config import parse_space
from services.tune.search import check_search
from tests.envs import CRASHING_ID, GATHERED_ID

SMALL = [
    "actors.num_actors=1",
    "actors.envs_per_actor=8",
    "actors.segment_length=16",
    "actors.num_cpus=0.5",
    "learner.num_cpus=0.5",
    "learner.num_threads=1",
    "train.eval_interval_s=0.5",
    "train.eval_episodes=4",
    "train.target_return=null",
    "checkpoint.every_s=0",
]


@pytest.mark.parametrize(
    ("item", "kind", "values"),
    [
        ("learner.lr=loguniform(1e-4,1e-2)", "loguniform", (1e-4, 1e-2)),
        ("actors.segment_length=choice(8, 16, 32)", "choice", (8, 16, 32)),
        ("learner.entropy_coef=uniform(0,0.01)", "uniform", (0, 0.01)),
        ("actors.num_actors=randint(1,4)", "randint", (1, 4)),
        ("learner.gamma=grid(0.95,0.99)", "grid", (0.95, 0.99)),
        ("learner.optimizer=adam", "fixed", ("adam",)),
    ],
)
def test_spaces_parse(item, kind, values):
    space = parse_space(item)
    assert (space.key, space.kind, space.values) == (item.partition("=")[0], kind, values)


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("learner.lr", "expected KEY=SPACE"),
        ("learner.lr=logunform(1e-4,1e-2)", "unknown space 'logunform'"),
        ("learner.lr=loguniform(0,1)", "loguniform needs LOW > 0"),
        ("learner.lr=uniform(0.1,0.01)", "LOW must be below HIGH"),
        ("actors.num_actors=randint(1,2.5)", "randint takes two integers"),
        ("learner.lr=uniform(1)", "takes two finite numbers"),
        ("learner.gamma=choice()", "choice needs at least one value"),
    ],
)
def test_bad_spaces_are_refused_naming_the_key(item, says):
    with pytest.raises(ConfigError, match=says):
        parse_space(item)


def _checked(*params: str, scheduler: str = "fifo", cpus: float | None = None):
    config = load_config(None, SMALL)
    spaces = dict(item.split("=", 1) for item in params)
    tune = dataclasses.replace(config.tune, params=spaces, scheduler=scheduler)
    check_search(config, tune, cluster_cpus=cpus)


def test_the_tune_section_of_a_yaml_file_is_the_default_search(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(
        "tune:\n  params:\n    learner.lr: loguniform(1e-4, 1e-2)\n"
        "    actors.segment_length: choice(8, 16)\n  samples: 6\n  scheduler: asha\n"
    )
    tune = load_config(path, []).tune
    assert [str(s) for s in tune.spaces()] == [
        "learner.lr=loguniform(0.0001, 0.01)",
        "actors.segment_length=choice(8, 16)",
    ]
    assert (tune.samples, tune.scheduler) == (6, "asha")
    path.write_text(path.read_text().replace("loguniform", "logunifrm"))
    with pytest.raises(ConfigError, match="unknown space 'logunifrm'"):
        load_config(path, [])
    with pytest.raises(ConfigError, match="with its closing"):
        parse_space("learner.lr=loguniform(1e-4")


def test_a_seed_is_a_non_negative_integer_or_null():
    assert load_config(None, ["tune.seed=7"]).tune.seed == 7
    assert load_config(None, []).tune.seed is None
    with pytest.raises(ConfigError, match="tune.seed"):
        load_config(None, ["tune.seed=-1"])


def test_keys_and_values_are_checked_against_the_config_before_anything_starts():
    _checked("learner.lr=loguniform(1e-4,1e-2)")
    with pytest.raises(ConfigError, match="unknown config key learner.lrr; did you mean"):
        _checked("learner.lrr=loguniform(1e-4,1e-2)")
    with pytest.raises(ConfigError, match=r"learner.gamma=2.0 is invalid"):
        _checked("learner.gamma=uniform(0.9,2.0)")
    with pytest.raises(ConfigError, match="nothing to search"):
        check_search(load_config(None, []), load_config(None, []).tune, None)


def test_pbt_perturbs_only_what_a_continued_run_may_change():
    _checked("learner.lr=loguniform(1e-4,1e-2)", scheduler="pbt")
    with pytest.raises(ConfigError, match="may perturb learner.* .not learner.model"):
        _checked("learner.model.hidden_sizes=choice([32],[64])", scheduler="pbt")
    with pytest.raises(ConfigError, match="may perturb"):
        _checked("env.id=choice(CartPole-v1,Acrobot-v1)", scheduler="pbt")


def test_a_search_that_can_never_be_placed_is_refused():
    with pytest.raises(ConfigError, match=r"a trial needs 5 CPUs together .* the cluster has 4"):
        _checked("actors.num_actors=randint(1,7)", cpus=4)
    _checked("actors.num_actors=randint(1,5)", cpus=4)


def test_a_bad_space_exits_2_before_ray_starts(capsys):
    code = main(["tune", "configs/cartpole.yaml", "--param", "learner.lr=logunform(1e-4,1e-2)"])
    assert code == 2
    assert "unknown space 'logunform'" in capsys.readouterr().err


def _search(tmp_path, ray_cluster, capsys, *args: str) -> tuple[str, Path]:
    overrides = [x for item in SMALL for x in ("--set", item)]
    code = main(["tune", "configs/cartpole.yaml", "--address", ray_cluster, *overrides,
                 "--set", f"train.run_root={tmp_path}", *args])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    (folder,) = tmp_path.glob("tune-cartpole-*")
    return out, folder


def test_an_asha_search_ends_with_a_table_and_a_best_config_that_trains(
    tmp_path, ray_cluster, capsys
):
    out, folder = _search(
        tmp_path, ray_cluster, capsys, "--set", "train.total_frames=12800",
        # In this order, two at a time: the hopeless rates reach each rung after the good
        # ones have set its cutoff.
        "--param", "learner.lr=grid(3e-3,1e-3,1e-6,3e-7)", "--samples", "1",
        "--scheduler", "asha", "--max-concurrent", "2",
    )  # fmt: skip
    trials = json.loads((folder / "trials.json").read_text())
    assert len(trials) == 4 and all(t["state"] == "TERMINATED" for t in trials)
    frames = {t["params"]["learner.lr"]: t["frames"] for t in trials}
    assert max(frames[3e-3], frames[1e-3]) == 12800
    assert min(frames[1e-6], frames[3e-7]) < 12800  # ASHA stopped a hopeless one early
    for trial in trials:  # a trial that ran its course finished as a run does
        finished = (Path(trial["run_dir"]) / "model.pt").is_file()
        assert finished == (trial["frames"] == 12800), trial
    assert all(Path(t["run_dir"]).parent == folder for t in trials)
    assert "| trial | learner.lr | final eval/episode_return | best |" in out
    best = folder / "best.yaml"
    assert f"best config written to {best}" in out
    config = load_config(best, [])
    best_trial = max(trials, key=lambda t: (t["final"], t["best"]))
    assert config.learner.lr == pytest.approx(best_trial["params"]["learner.lr"])
    assert best_trial["params"]["learner.lr"] in (3e-3, 1e-3)
    assert config.actors.num_cpus == 0.5 and config.name == "cartpole"
    again = ["--set", "train.total_frames=256", "--set", f"train.run_root={tmp_path}/best"]
    code = main(["train", "--config", str(best), "--address", ray_cluster, "--no-progress",
                 *again])  # fmt: skip
    assert code == 0, capsys.readouterr().err


def test_pbt_copies_a_better_trials_checkpoint_and_training_goes_on_from_it(
    tmp_path, ray_cluster, capsys
):
    gather = tmp_path / "gather"
    gather.mkdir()
    _, folder = _search(
        tmp_path, ray_cluster, capsys, "--set", "train.total_frames=12288",
        "--param", "learner.lr=choice(1e-5,3e-3)", "--samples", "2", "--scheduler", "pbt",
        "--set", "tune.perturbation_frames=2048", "--set", "tune.seed=1",
        # PBT compares trials that train at the same time: each trial's actor waits at its
        # first step for the other's (a slow start-up once let one trial end before the
        # other's first update, and nothing was compared).
        "--set", f"env.id={GATHERED_ID}",
        "--set", f"env.kwargs={json.dumps({'folder': str(gather), 'count': 2})}",
        "--set", "train.sample_timeout_s=180",
        # Plain rounds: PBT restarts a trial at nearly every step, and a compiled graph's
        # driver and learner wait by spinning, on more than the 0.5 CPUs they reserve on
        # this cluster of 4 logical CPUs on 2 cores: a restart then took 16-24 s to its
        # first update instead of ~8 here. The ASHA search above keeps compiled rounds, so
        # Tune stops compiled runs too.
        "--set", "train.compiled_graph=false",
    )  # fmt: skip
    # The seed draws one trial of each rate, so the worse one falls behind for certain:
    # with the same rate drawn twice, noise could swap the two at every step, no exploit.
    firsts = [min(folder.glob(f"cartpole-t0{i}-*")) for i in (0, 1)]
    assert {load_config(run / "config.yaml", []).learner.lr for run in firsts} == {1e-5, 3e-3}
    steps = [json.loads(x) for x in (folder / "lineage.jsonl").read_text().splitlines()]
    exploits = [s for s in steps if s["step"] == "exploit"]
    assert exploits, steps
    step = exploits[0]
    assert step["from_trial"] != step["trial"] and step["checkpoint"].startswith("ckpt-")
    # The new run directory goes on from the donor's checkpoint: its first update is the
    # one after the checkpoint's, and it trained on.
    lines = [json.loads(x) for x in (folder / step["run"] / "metrics.jsonl").open()]
    assert lines[0]["perf/updates"] == step["updates"] + 1
    assert lines[-1]["perf/frames"] > step["frames"]


def test_a_failing_trial_ends_alone_and_running_trials_are_runs_troupe_metrics_lists(
    tmp_path, ray_cluster, capsys
):
    """One trial's env crashes on every step past the tenth, so its run ends in an error;
    the other trial trains to its end, is listed by `troupe metrics` (the registry it reads)
    while it runs, and is the best."""
    from services.control.registry import RayRuns

    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = _search(
                tmp_path, ray_cluster, capsys, "--set", "train.total_frames=12800",
                "--set", "train.max_actor_failures=2",
                "--set", "train.compiled_graph=false",  # as for PBT: 37 s against 50 here
                "--param", f"env.id=grid(CartPole-v1,{CRASHING_ID})", "--samples", "1",
                "--scheduler", "fifo", "--max-concurrent", "2",
            )  # fmt: skip
        except BaseException as err:  # re-raised in the test's own thread below
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    listed: set[str] = set()
    while thread.is_alive():
        listed |= {s["run"] for s in RayRuns().statuses() if s["state"] == "running"}
        time.sleep(0.2)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    out, folder = outcome["result"]
    trials = {t["params"]["env.id"]: t for t in json.loads((folder / "trials.json").read_text())}
    crashed, good = trials[CRASHING_ID], trials["CartPole-v1"]
    assert crashed["state"] == "ERROR" and "raised in actor" in crashed["error"], crashed
    assert good["state"] == "TERMINATED" and good["frames"] == 12800
    assert Path(good["run_dir"]).name in listed, listed
    assert crashed["error"].startswith("ActorFailures: ") and "Traceback" not in crashed["error"]
    assert "ERROR: ActorFailures: " in out
    assert load_config(folder / "best.yaml", []).env.id == "CartPole-v1"
