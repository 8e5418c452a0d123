"""A run's control point, run lookup by name, and the cluster commands' checks that need no
cluster: `RunControl`, `resolve_run`, `troupe scale/metrics/serve` argument validation, and the
job entrypoint that `troupe submit` builds. No Ray is started here."""

from __future__ import annotations

import contextlib
import math
import shlex
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from learner import metrics as M
from learner.config import ConfigError
from services import cli, job
from services.cluster import jobs
from services.control.registry import resolve_run
from services.control.run_control import (
    MAX_ACTORS,
    STATUS_METRICS,
    RunControl,
    RunNotFound,
    ScaleError,
    check_actor_count,
)

BAD_COUNTS = [0, -1, MAX_ACTORS + 1, True, False, "3", 2.0, None, [3]]


def _control(actors: int = 2) -> RunControl:
    return RunControl("cart-20261123-124812", "cart", "/runs/cart-20261123-124812", actors)


# --- check_actor_count, RunControl -------------------------------------------------------------


@pytest.mark.parametrize("actors", [1, 7, MAX_ACTORS])
def test_check_actor_count_accepts_integers_in_range(actors):
    assert check_actor_count(actors) == actors


@pytest.mark.parametrize("actors", BAD_COUNTS)
def test_check_actor_count_rejects_the_rest_naming_the_range(actors):
    with pytest.raises(ScaleError) as err:
        check_actor_count(actors)
    expected = f"actors={actors!r} is invalid: expected an integer from 1 to {MAX_ACTORS}"
    assert str(err.value) == expected


def test_a_new_run_is_starting_with_its_actor_count_and_every_figure_listed():
    status = _control(actors=3).status()
    assert status["run"] == "cart-20261123-124812"
    assert status["name"] == "cart"
    assert status["state"] == "starting"
    assert status["run_dir"] == "/runs/cart-20261123-124812"
    figures = status["metrics"]
    assert list(figures) == list(STATUS_METRICS)
    assert figures[M.ACTORS_TARGET] == 3
    assert figures[M.FRAMES] is None and figures[M.EVAL_RETURN] is None


def test_a_control_point_needs_a_valid_actor_count():
    with pytest.raises(ScaleError):
        _control(actors=0)


def test_scale_sets_the_target_that_report_answers():
    control = _control(actors=2)
    assert control.report({M.FRAMES: 10}) == 2
    status = control.scale(5)
    assert status["metrics"][M.ACTORS_TARGET] == 5
    assert control.report({M.FRAMES: 20, M.ACTORS_TARGET: 2}) == 5
    # The driver's last figure for the target is stale until it applies the change: status
    # shows what was asked for.
    assert control.status()["metrics"][M.ACTORS_TARGET] == 5


@pytest.mark.parametrize("actors", BAD_COUNTS)
def test_a_bad_scale_request_leaves_the_target_alone(actors):
    control = _control(actors=2)
    with pytest.raises(ScaleError, match="is invalid"):
        control.scale(actors)
    assert control.report({}) == 2


@pytest.mark.parametrize("state", ["finished", "failed"])
def test_an_ended_run_cannot_be_scaled(state):
    control = _control(actors=2)
    control.report({M.FRAMES: 10}, state)
    with pytest.raises(ScaleError, match=f"has {state}"):
        control.scale(4)
    assert control.status()["metrics"][M.ACTORS_TARGET] == 2
    assert control.status()["state"] == state


def test_a_running_run_can_be_scaled_before_its_first_report():
    control = _control(actors=2)
    assert control.scale(1)["state"] == "starting"
    assert control.report({}) == 1


def test_report_rejects_an_unknown_state():
    control = _control()
    with pytest.raises(ValueError, match="state='done'"):
        control.report({}, "done")
    assert control.status()["state"] == "starting"


def test_status_shows_the_latest_figures_only_for_status_metrics():
    control = _control()
    control.report({M.FRAMES: 100, M.FPS: 50.0, M.LOSS_TOTAL: 1.0, "custom/x": 3})
    figures = control.status()["metrics"]
    assert figures[M.FRAMES] == 100
    assert figures[M.FPS] == 50.0
    assert M.LOSS_TOTAL not in figures and "custom/x" not in figures
    control.report({M.FRAMES: 200})
    figures = control.status()["metrics"]
    assert figures[M.FRAMES] == 200
    assert figures[M.FPS] is None  # not carried over from the previous report


def test_report_keeps_a_copy_of_the_figures():
    control = _control()
    record = {M.FRAMES: 100}
    control.report(record)
    record[M.FRAMES] = 999
    assert control.status()["metrics"][M.FRAMES] == 100


def test_the_last_evaluation_is_kept_across_reports_without_one():
    control = _control()
    control.report({M.FRAMES: 1, M.EVAL_RETURN: 200.0})
    control.report({M.FRAMES: 2})
    assert control.status()["metrics"][M.EVAL_RETURN] == 200.0
    control.report({M.FRAMES: 3, M.EVAL_RETURN: 500.0})
    assert control.status()["metrics"][M.EVAL_RETURN] == 500.0
    control.report({M.FRAMES: 4, M.EVAL_RETURN: None})
    assert control.status()["metrics"][M.EVAL_RETURN] == 500.0


def test_non_finite_figures_read_as_none():
    control = _control()
    control.report(
        {M.LOSS_POLICY: math.nan, M.GRAD_NORM: math.inf, M.LOSS_VALUE: -math.inf, M.FPS: 1.5}
    )
    figures = control.status()["metrics"]
    assert figures[M.LOSS_POLICY] is None
    assert figures[M.GRAD_NORM] is None
    assert figures[M.LOSS_VALUE] is None
    assert figures[M.FPS] == 1.5


def test_uptime_is_measured_by_the_control_point_not_reported(monkeypatch):
    control = _control()
    control.report({M.UPTIME: 1e9})
    monkeypatch.setattr("services.control.run_control.time.time", lambda: control.started + 12.5)
    assert control.status()["metrics"][M.UPTIME] == 12.5


def test_a_config_asks_for_no_more_actors_than_a_run_can_register():
    from services.config import load_config

    config = load_config(None, [f"actors.num_actors={MAX_ACTORS}"])
    RunControl("big-20261123-124812", "big", "/r", config.actors.num_actors)
    with pytest.raises(ConfigError, match="actors.num_actors=4097 is invalid"):
        load_config(None, [f"actors.num_actors={MAX_ACTORS + 1}"])


# --- resolve_run ---------------------------------------------------------------------------------

RUNS = [
    "cartpole-20261123-124812",
    "cartpole-20261123-124812-1",
    "lunar-20261123-130000",
    "lunar2-20261123-130000",
    "x-20261123-130000-20261124-010203",
    "mujoco-20261203-101010-0a9f3c",
]


def test_an_exact_id_resolves_to_itself():
    for run in RUNS:
        assert resolve_run(run, RUNS) == run


def test_a_unique_name_resolves_to_its_run():
    assert resolve_run("lunar", RUNS) == "lunar-20261123-130000"
    assert resolve_run("lunar2", RUNS) == "lunar2-20261123-130000"
    assert resolve_run("cartpole", ["a-20260101-000000", "cartpole-20261123-124812-3"]) == (
        "cartpole-20261123-124812-3"
    )
    assert resolve_run("mujoco", RUNS) == "mujoco-20261203-101010-0a9f3c"
    # A name that itself ends in a timestamp-like part.
    assert resolve_run("x-20261123-130000", RUNS) == "x-20261123-130000-20261124-010203"


def test_a_name_shared_by_several_runs_is_ambiguous_and_lists_them():
    with pytest.raises(RunNotFound, match="several runs") as err:
        resolve_run("cartpole", RUNS)
    assert "cartpole-20261123-124812, cartpole-20261123-124812-1" in str(err.value)
    assert "lunar" not in str(err.value)


@pytest.mark.parametrize(
    "ref",
    [
        "cart",  # a prefix of a name is not the name
        "lunar-2026",
        "cartpole-20261123",
        "l.nar",  # no regex wildcard
        "lunar-20261123-130000-",
        "",
    ],
)
def test_an_unknown_ref_lists_the_runs(ref):
    with pytest.raises(RunNotFound, match="no run") as err:
        resolve_run(ref, RUNS)
    assert ", ".join(RUNS) in str(err.value)


def test_no_runs_at_all_says_none():
    with pytest.raises(RunNotFound, match=r"running: none"):
        resolve_run("cartpole", [])


def test_a_name_needs_the_full_timestamp_form():
    runs = [
        "cartpole-2026-124812",
        "cartpole-20261123-124812-x",
        "cartpole-20261123-124812-1-2",
        "cartpole-latest",
    ]
    with pytest.raises(RunNotFound, match="no run"):
        resolve_run("cartpole", runs)


# --- CLI argument checks (argparse exits 2 before any cluster is contacted) --------------------


def _exit_code(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("actors", ["0", "-3", "x", "1.5", str(MAX_ACTORS + 1)])
def test_scale_rejects_a_bad_actor_count(actors, capsys):
    code, err = _exit_code(["scale", "cartpole", "--actors", actors], capsys)
    assert code == 2
    assert "--actors" in err
    assert actors in err


def test_scale_needs_an_actor_count(capsys):
    code, err = _exit_code(["scale", "cartpole"], capsys)
    assert code == 2
    assert "--actors" in err


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_metrics_rejects_a_non_positive_interval(interval, capsys):
    code, err = _exit_code(["metrics", "--watch", "--interval", interval], capsys)
    assert code == 2
    assert "--interval" in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_rejects_a_bad_port(port, capsys):
    code, err = _exit_code(["serve", "--port", port], capsys)
    assert code == 2
    assert "--port" in err


# --- troupe scale on a fake cluster: what the command does, and how it fails -------------------


class _Method:
    """A Ray actor method called in place: `.remote()` answers a thunk the patched `ray.get`
    runs, so an error the run raises comes out of `ray.get`, as from a real actor."""

    def __init__(self, method) -> None:
        self.method = method

    def remote(self, *args):
        return lambda: self.method(*args)


@pytest.fixture
def cluster(monkeypatch):
    """Two runs (real `RunControl`s) behind troupe's registry, with Ray's calls faked: no Ray.
    `joined` records the address each command joined."""
    from services.cluster import connection
    from services.control import registry

    controls = {}
    for run_id in ("cartpole-20261123-124812", "lunar-20261123-130000"):
        control = RunControl(run_id, run_id.split("-")[0], f"/runs/{run_id}", 2)
        control.report({M.ACTORS_LIVE: 2, M.ACTORS_PENDING: 0})
        controls[run_id] = control
    joined: list[str | None] = []

    @contextlib.contextmanager
    def joining(address=None):
        joined.append(address)
        yield

    def get_actor(name, namespace=None):
        assert namespace == registry.NAMESPACE
        control = controls[name]
        return SimpleNamespace(scale=_Method(control.scale), status=_Method(control.status))

    monkeypatch.setattr(connection, "cluster_connection", joining)
    monkeypatch.setattr(registry, "list_runs", lambda: sorted(controls))
    monkeypatch.setattr(registry.ray, "get_actor", get_actor)
    monkeypatch.setattr(registry.ray, "get", lambda ref, timeout=None: ref())
    return SimpleNamespace(controls=controls, joined=joined)


def test_troupe_scale_sets_the_named_runs_target_on_the_given_cluster(cluster, capsys):
    argv = ["scale", "lunar", "--actors", "4", "--address", "10.0.0.1:6379"]
    assert cli.main(argv) == 0
    assert cluster.joined == ["10.0.0.1:6379"]
    assert cluster.controls["lunar-20261123-130000"].report({}) == 4
    assert cluster.controls["cartpole-20261123-124812"].report({}) == 2  # the other run
    assert capsys.readouterr().out == (
        "troupe: run lunar-20261123-130000 now wants 4 rollout actors (live 2, pending 0 at the "
        "last update; it applies the change before its next update)\n"
    )


def test_troupe_scale_of_an_ended_run_exits_2_with_the_runs_reason(cluster, capsys):
    control = cluster.controls["lunar-20261123-130000"]
    control.report({}, "finished")
    assert cli.main(["scale", "lunar", "--actors", "4"]) == 2
    assert capsys.readouterr().err == (
        "troupe: run lunar-20261123-130000 has finished; there is nothing to scale\n"
    )
    assert control.status()["metrics"][M.ACTORS_TARGET] == 2


def test_troupe_scale_of_an_unknown_run_exits_2_listing_the_runs_unquoted(cluster, capsys):
    assert cli.main(["scale", "lunar-2026", "--actors", "4"]) == 2
    assert capsys.readouterr().err == (
        "troupe: no run 'lunar-2026' on this cluster "
        "(running: cartpole-20261123-124812, lunar-20261123-130000)\n"
    )
    assert all(c.report({}) == 2 for c in cluster.controls.values())


@pytest.mark.parametrize("command", [["scale", "cartpole", "--actors", "2"], ["metrics"]])
def test_cluster_commands_refuse_a_job_api_address_before_joining(command, capsys):
    assert cli.main([*command, "--address", "http://127.0.0.1:8265"]) == 2
    err = capsys.readouterr().err
    assert "'http://127.0.0.1:8265' is a job API address" in err and "HOST:6379" in err


# --- jobs: the entrypoint and checks before anything is sent ------------------------------------


def _config(folder: Path, text: str = "name: cart\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cart.yaml"
    path.write_text(text)
    return path


def test_entrypoint_runs_the_job_module_with_a_relative_config(tmp_path):
    config = _config(tmp_path / "configs")
    command = jobs.entrypoint(config, ["learner.lr=1e-3"], tmp_path)
    assert shlex.split(command) == [
        "python",
        "-m",
        "services.job",
        "--config",
        "configs/cart.yaml",
        "--set",
        "learner.lr=1e-3",
    ]


def test_entrypoint_quotes_values_so_they_round_trip(tmp_path):
    config = _config(tmp_path / "my configs")
    overrides = ["env.kwargs={render_mode: null, title: 'two words'}", "name=a;rm -rf ~", "x=$HOME"]
    command = jobs.entrypoint(config, overrides, tmp_path)
    argv = shlex.split(command)
    assert argv[3:5] == ["--config", "my configs/cart.yaml"]
    assert argv[5:] == [part for item in overrides for part in ("--set", item)]


def test_entrypoint_refuses_a_config_outside_the_working_dir(tmp_path):
    config = _config(tmp_path / "elsewhere")
    working_dir = tmp_path / "project"
    working_dir.mkdir()
    with pytest.raises(ConfigError, match="--working-dir") as err:
        jobs.entrypoint(config, [], working_dir)
    assert "outside the working dir" in str(err.value)


def _no_client(address):
    raise AssertionError(f"the job API at {address} must not be contacted")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["learner.lrr=1e-3"], "did you mean learner.lr"),
        (["actors.num_actors=0"], "actors.num_actors"),
    ],
)
def test_submit_checks_the_config_before_contacting_the_cluster(
    tmp_path, monkeypatch, overrides, message
):
    config = _config(tmp_path)
    monkeypatch.setattr(jobs, "client", _no_client)
    with pytest.raises(ConfigError, match=message):
        jobs.submit(str(config), overrides, "http://127.0.0.1:1", working_dir=str(tmp_path))


def test_submit_checks_the_working_dir_and_config_place_before_contacting_the_cluster(
    tmp_path, monkeypatch
):
    config = _config(tmp_path / "elsewhere")
    monkeypatch.setattr(jobs, "client", _no_client)
    with pytest.raises(ConfigError, match="no such directory"):
        jobs.submit(str(config), [], "http://127.0.0.1:1", working_dir=str(tmp_path / "missing"))
    (tmp_path / "project").mkdir()
    with pytest.raises(ConfigError, match="--working-dir"):
        jobs.submit(str(config), [], "http://127.0.0.1:1", working_dir=str(tmp_path / "project"))


def test_troupe_submit_with_a_bad_config_exits_2_naming_the_field(tmp_path, capsys):
    config = _config(tmp_path)
    argv = ["submit", str(config), "--set", "learner.lrr=1", "--address", "http://127.0.0.1:1"]
    assert cli.main([*argv, "--working-dir", str(tmp_path)]) == 2
    assert "learner.lrr" in capsys.readouterr().err


# --- services.job: the job's own entrypoint ----------------------------------------------------


@pytest.fixture
def captured_train(monkeypatch, tmp_path):
    """`services.job.main` with `troupe train` replaced by a recorder, HOME in tmp_path."""
    calls: list[list[str]] = []

    def fake_main(argv):
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def _sets(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]


def test_a_relative_run_root_is_kept_under_home_troupe(captured_train, tmp_path):
    config = _config(tmp_path, "name: cart\ntrain:\n  run_root: runs\n")
    assert job.main(["--config", str(config), "--set", "learner.lr=1e-3"]) == 0
    [argv] = captured_train
    assert argv[:4] == ["train", "--address", "auto", "--no-progress"]
    assert argv[argv.index("--config") + 1] == str(config)
    root = str(tmp_path / "home" / "troupe" / "runs")
    assert _sets(argv) == ["learner.lr=1e-3", f"train.run_root={root}"]


def test_a_relative_run_root_set_on_the_command_line_is_anchored_too(captured_train, tmp_path):
    assert job.main(["--set", "train.run_root=out/a"]) == 0
    [argv] = captured_train
    assert "--config" not in argv
    root = str(tmp_path / "home" / "troupe" / "out" / "a")
    assert _sets(argv)[-1] == f"train.run_root={root}"  # the last --set wins


def test_the_default_run_root_is_anchored(captured_train, tmp_path):
    assert job.main([]) == 0
    [argv] = captured_train
    assert _sets(argv) == [f"train.run_root={tmp_path / 'home' / 'troupe' / 'runs'}"]


@pytest.mark.parametrize("root", ["/data/runs", "~/elsewhere"])
def test_an_absolute_run_root_is_left_alone(captured_train, root):
    assert job.main(["--set", f"train.run_root={root}"]) == 0
    [argv] = captured_train
    assert _sets(argv) == [f"train.run_root={root}"]


def test_the_job_joins_the_cluster_in_ray_address(captured_train, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert job.main([]) == 0
    [argv] = captured_train
    assert argv[1:3] == ["--address", "10.0.0.1:6379"]


@pytest.mark.parametrize(
    "args", [["--set", "learner.lrr=1"], ["--config", "no/such/file.yaml"], ["--set", "seed=-1"]]
)
def test_a_bad_job_config_returns_2_without_training(captured_train, capsys, args):
    assert job.main(args) == 2
    assert captured_train == []
    assert "config error" in capsys.readouterr().err


def test_the_job_passes_on_what_training_returns(captured_train, monkeypatch):
    monkeypatch.setattr(cli, "main", lambda argv: 1)
    assert job.main([]) == 1


def test_a_long_lived_client_stops_after_misses_in_a_row_only(monkeypatch):
    """`troupe serve` stops once the GCS refuses `misses` connections in a row (`ray stop`,
    `ray down`); an answer in between starts the count again. Checks scripted: no timing."""
    from services.cluster import connection

    script = [True, False, False, True, False, False, False]  # up, 2 misses, up, 3 misses
    checks: list[bool] = []

    def check(address, timeout_s):
        assert address == "10.0.0.1:6379"
        up = script[len(checks)]  # checked again after the third miss: IndexError, no call
        checks.append(up)
        if not up:
            raise ConnectionError("refused")

    monkeypatch.setattr(connection, "_check_reachable", check)
    gone_after: list[int] = []
    watcher = connection.watch_gcs(
        "10.0.0.1:6379", lambda: gone_after.append(len(checks)), every_s=0, misses=3
    )
    watcher.join(10)
    assert not watcher.is_alive()
    assert gone_after == [len(script)]


def test_the_reachability_check_names_an_address_nobody_listens_on():
    from services.cluster.connection import _check_reachable

    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    with listener:
        _check_reachable(address)
    with pytest.raises(ConnectionError, match=f"cannot connect to the Ray cluster at '{address}'"):
        _check_reachable(address)
    _check_reachable("auto")  # forms other than HOST:PORT are left to Ray


def test_a_job_upload_carries_every_source_file():
    """A job runs the working dir Ray uploads, which leaves out what `.gitignore` and the
    job's excludes match (with git's wildcard rules): no file of troupe's own packages may be
    among them (a subpackage once named `runs/` was, and jobs failed on import)."""
    from ray._private.thirdparty.pathspec import PathSpec

    root = Path(__file__).resolve().parent.parent
    rules = [*(root / ".gitignore").read_text().splitlines(), *jobs.EXCLUDES]
    spec = PathSpec.from_lines("gitwildmatch", rules)
    sources = [
        path.relative_to(root).as_posix()
        for package in ("learner", "actors", "services", "configs")
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert any(s.endswith("__init__.py") for s in sources)
    assert [s for s in sources if spec.match_file(s)] == []


@pytest.mark.parametrize(
    "path",
    [
        ".env", "deploy/.env.prod", "keys/cluster.pem", "tls/server.key", "id_rsa",
        ".ssh/id_ed25519", ".aws/credentials", ".ray/auth_token", "gcp-credentials.json",
        ".netrc", ".git-credentials", "auth_token", "infra/terraform.tfstate",
    ],
)  # fmt: skip
def test_a_job_upload_leaves_out_secrets(path):
    """Whatever the project's `.gitignore` says: the job's own excludes match them."""
    from ray._private.thirdparty.pathspec import PathSpec

    assert PathSpec.from_lines("gitwildmatch", jobs.EXCLUDES).match_file(path)


def test_a_search_job_runs_troupe_tune_of_its_config(captured_train, tmp_path):
    text = "name: cart\ntune:\n  params:\n    learner.lr: loguniform(1e-4, 1e-2)\n"
    config = _config(tmp_path, text)
    assert job.main(["--config", str(config), "--tune"]) == 0
    [argv] = captured_train
    assert argv[:4] == ["tune", str(config), "--address", "auto"]
    assert _sets(argv) == [f"train.run_root={tmp_path / 'home' / 'troupe' / 'runs'}"]
    assert job.main(["--config", str(config), "--tune", "--run-id", "x"]) == 2


def test_submit_tune_checks_the_search_and_sends_its_entrypoint(tmp_path, monkeypatch):
    config = _config(tmp_path / "configs")
    command = jobs.entrypoint(config, [], tmp_path, tune=True)
    assert shlex.split(command) == [
        "python", "-m", "services.job", "--config", "configs/cart.yaml", "--tune"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="nothing to search"):
        jobs.submit(str(config), [], "http://127.0.0.1:1", str(tmp_path), tune=True)
