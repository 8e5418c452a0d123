"""`troupe train` and `troupe eval` as a user runs them."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from learner import metrics as M
from services import cli
from services.config import load_config
from services.storage.checkpoints import Checkpoints
from services.storage.rundir import RunDir
from tests.conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

TIMEOUT = 300


def _run(cmd, env, **kw):
    return subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, **kw
    )


def _run_dir(stdout: str) -> Path:
    match = re.search(r"run directory (\S+)", stdout)
    assert match, stdout
    return Path(match.group(1))


@pytest.mark.parametrize(
    "args, field",
    [
        (["--set", "learner.lr=abc"], "learner.lr"),
        (["--set", "actors.num_actors=0"], "actors.num_actors"),
        (["--set", "env.id=NoSuchEnv-v0"], "env.id"),
        (["--set", "env.kwargs={colour: red}"], "env.kwargs"),
        (["--set", "learner.lrr=1e-3"], "did you mean learner.lr?"),
        (["--config", "missing.yaml"], "missing.yaml"),
        # Found once connected: the embedded Ray of this machine has no GPU to give.
        pytest.param(
            ["--set", "learner.device=cuda"],
            "{CPU: 1, GPU: 1} (learner.num_cpus, learner.device)",
            marks=pytest.mark.ray,  # it starts an embedded Ray
        ),
    ],
)
@pytest.mark.subprocess
def test_bad_config_exits_nonzero_naming_the_field(args, field, troupe_cmd, cli_env, tmp_path):
    proc = _run([*troupe_cmd, "train", *args, "--set", f"train.run_root={tmp_path}"], cli_env)
    assert proc.returncode == 2
    assert field in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing started, no run directory


@pytest.mark.subprocess
def test_unreachable_cluster_is_a_clear_error(troupe_cmd, cli_env, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _run(
        [
            *troupe_cmd,
            "train",
            "--address",
            f"127.0.0.1:{port}",
            "--set",
            f"train.run_root={tmp_path}",
        ],
        cli_env,
    )
    assert proc.returncode == 2
    assert f"cannot connect to the Ray cluster at '127.0.0.1:{port}'" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_eval_of_a_folder_without_a_finished_run_exits_2_saying_why(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"troupe: {tmp_path} is not a run directory: no config.yaml\n"
    run = RunDir.create(tmp_path, "unfinished")
    run.write_config(load_config(None))
    assert cli.main(["eval", str(run.path)]) == 2
    message = f"troupe: {run.path} has no model.pt: did the run finish?\n"
    assert capsys.readouterr().err == message


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--episodes", "0"], "argument --episodes: must be >= 1, got 0"),
    ],
)
def test_eval_flags_are_checked_before_the_run_is_read(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["eval", str(tmp_path / "no-such-run"), *args])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_the_console_script_is_the_cli():
    """pyproject.toml's `troupe` entry point names the function `troupe` runs here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, name = project["scripts"]["troupe"].partition(":")
    assert getattr(importlib.import_module(module), name) is cli.main


@pytest.mark.ray
def test_train_on_embedded_ray_then_eval(troupe_cmd, cli_env, tmp_path):
    """No address: `troupe train` starts its own local Ray, trains briefly, stops it."""
    proc = _run(
        [
            *troupe_cmd,
            "train",
            "--no-progress",
            "--set",
            "train.total_frames=2000",
            "--set",
            "actors.envs_per_actor=8",
            "--set",
            f"train.run_root={tmp_path}",
        ],
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr
    run = _run_dir(proc.stdout)
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "model.pt",
        "summary.json",
    }
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["perf/frames"] >= 2000
    required = {
        "perf/fps",
        "loss/policy",
        "loss/value",
        "loss/entropy",
        "policy/entropy",
        "policy/grad_norm",
        "rollout/episode_return",
        "policy/version",
    }
    assert all(required <= line.keys() for line in lines)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["frames"] == lines[-1]["perf/frames"]

    ev = _run([*troupe_cmd, "eval", str(run), "--episodes", "3"], cli_env)
    assert ev.returncode == 0, ev.stderr
    version = RunDir(run).load_model().version
    assert re.search(r"mean return [\d.]+ \+/- [\d.]+ over 3 episodes", ev.stdout)
    assert f"(policy version {version}, CartPole-v1)" in ev.stdout  # the run's own model


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("config", ["configs/cartpole.yaml", "configs/cartpole_async.yaml"])
def test_cartpole_config_is_solved(config, ray_cluster, troupe_cmd, cli_env, tmp_path):
    """The learning test, sync and async: the shipped config reaches a mean return >= 475 over
    20 fresh evaluation episodes (seeds the training loop never evaluated)."""
    proc = _run(
        [
            *troupe_cmd,
            "train",
            "--config",
            config,
            "--address",
            ray_cluster,
            "--no-progress",
            "--set",
            f"train.run_root={tmp_path}",
        ],
        cli_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(solved)" in proc.stdout, proc.stdout
    ev = _run(
        [*troupe_cmd, "eval", str(_run_dir(proc.stdout)), "--episodes", "20", "--seed", "777"],
        cli_env,
    )
    assert ev.returncode == 0, ev.stderr
    mean = float(re.search(r"mean return ([\d.]+)", ev.stdout).group(1))
    assert mean >= 475, ev.stdout
    lines = [json.loads(x) for x in (_run_dir(proc.stdout) / "metrics.jsonl").open()]
    lag = max(x[M.POLICY_LAG_MAX] for x in lines)
    assert lag >= 1 if "async" in config else lag == 0  # async did learn off-policy


@pytest.mark.ray
@pytest.mark.subprocess
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_leaves_a_checkpoint_and_resume_carries_on(
    ray_cluster, troupe_cmd, cli_env, tmp_path, stop
):
    """`troupe stop` (SIGTERM) or Ctrl-C (SIGINT) mid-run, in compiled rounds, then `troupe
    train --resume`: counters, the metrics history and the policy version continue where the
    stopped run left them."""
    args = [
        "--address", ray_cluster, "--no-progress",
        "--set", "actors.envs_per_actor=8", "--set", "train.eval_interval_s=0",
        "--set", "train.target_return=null", "--set", "checkpoint.every_updates=100000",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [*troupe_cmd, "train", *args, "--set", f"train.run_root={tmp_path}"],
        env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_dir = _run_dir(proc.stdout.readline())
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not metrics.exists() or len(metrics.read_text().splitlines()) < 20:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 128 + stop, proc.stderr.read()
        if stop == signal.SIGINT:
            assert "troupe: interrupted" in proc.stderr.read()
    finally:
        proc.kill()
    stopped = [json.loads(line) for line in metrics.read_text().splitlines()]
    (checkpoint,) = (run_dir / "checkpoints").glob("ckpt-*")  # the final one, on the stop
    assert checkpoint.name == f"ckpt-{len(stopped):09d}.pt"
    # Its weights are those of its counters: an update the stop cut off between the learner
    # and its metrics line is counted (and logged) before the save, not left out of both.
    saved = Checkpoints.for_run(run_dir).latest()
    assert saved.counters["updates"] == stopped[-1][M.UPDATES] == len(stopped)
    assert saved.learner["frames"] == saved.counters["frames"] == stopped[-1][M.FRAMES]
    assert saved.learner["version"] == stopped[-1][M.POLICY_VERSION] == len(stopped)

    frames = stopped[-1][M.FRAMES]
    resumed = _run(
        [*troupe_cmd, "train", "--resume", str(run_dir), *args,
         "--set", f"train.total_frames={frames + 20 * 256}"],
        cli_env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run_dir}" in resumed.stdout and f"({frames:,} frames" in resumed.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    after = records[len(stopped) :]
    assert [r[M.UPDATES] for r in records] == list(range(1, len(records) + 1))
    assert after[0][M.FRAMES] == frames + 256 and after[-1][M.FRAMES] >= frames + 20 * 256
    assert after[0][M.POLICY_VERSION] > stopped[-1][M.POLICY_VERSION]
    assert after[0][M.WALL_TIME] > stopped[-1][M.WALL_TIME]


@pytest.mark.ray
@pytest.mark.subprocess
def test_a_job_whose_driver_was_killed_continues_from_its_last_checkpoint_when_run_again(
    ray_cluster, troupe_cmd, cli_env, tmp_path
):
    """A lost head, as the job sees it: its driver SIGKILLed mid-run (no final checkpoint).
    The same command run again (a resubmitted job, a KubeRay retry) continues run `nightly`
    from its newest checkpoint in checkpoint.storage; at most one checkpoint interval is
    trained again, and the metrics go back to the checkpoint."""
    storage = tmp_path / "store"
    cmd = [
        *troupe_cmd, "train", "--run-id", "nightly", "--address", ray_cluster, "--no-progress",
        "--set", "actors.envs_per_actor=8", "--set", "train.eval_interval_s=0",
        "--set", "train.target_return=null", "--set", "checkpoint.every_updates=10",
        "--set", f"checkpoint.storage={storage}", "--set", f"train.run_root={tmp_path / 'runs'}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [*cmd, "--set", "train.total_frames=10000000"],
        env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_dir = _run_dir(proc.stdout.readline())
        assert run_dir == tmp_path / "runs" / "nightly"
        metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 120

        def past_a_second_checkpoint() -> bool:  # logged beyond it, so the rewind has work
            saved = sorted((storage / "nightly").glob("ckpt-*.pt"))
            lines = metrics.read_text().count("\n") if metrics.exists() else 0
            return len(saved) >= 2 and lines > int(saved[-1].stem.split("-")[1])

        while not past_a_second_checkpoint():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if line.endswith("}")]  # fmt: skip
    newest = max(storage.glob("nightly/ckpt-*.pt"))
    saved = int(newest.stem.split("-")[1])
    assert 20 <= saved <= logged[-1][M.UPDATES] <= saved + 10

    again = _run([*cmd, "--set", f"train.total_frames={(saved + 20) * 256}"], cli_env)
    assert again.returncode == 0, again.stderr
    frames = saved * 256  # 8 envs x 32 steps per update
    assert f"resuming {run_dir} from {newest.name} ({frames:,} frames" in again.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r[M.UPDATES] for r in records] == list(range(1, len(records) + 1))
    assert records[saved][M.FRAMES] == frames + 256 and records[-1][M.FRAMES] >= frames + 20 * 256


@pytest.mark.slow
@pytest.mark.ray
def test_checkpoints_on_s3_resume_the_solved_policy(
    ray_cluster, troupe_cmd, cli_env, tmp_path, s3_bucket
):
    """Checkpoints on an S3 server: the run dir keeps none, and --resume continues from S3
    with the policy it had (its evaluation stays solved, where a fresh one scores ~20)."""
    storage = s3_bucket["url"] + "/runs"
    endpoint = s3_bucket["options"]["endpoint_url"]
    env = {**cli_env, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    args = [
        "--address", ray_cluster, "--no-progress",
        "--set", f"checkpoint.storage={storage}",
        "--set", f"checkpoint.storage_options={{endpoint_url: '{endpoint}'}}",
    ]  # fmt: skip
    bad = _run(
        [*troupe_cmd, "train", *args, "--set", "checkpoint.storage=s3://no-such-bucket/x",
         "--set", f"train.run_root={tmp_path}"],
        env,
    )  # fmt: skip
    assert bad.returncode == 2 and "s3://no-such-bucket/x" in bad.stderr, bad.stderr
    assert not list(tmp_path.iterdir())  # nothing started

    solved = _run(
        [*troupe_cmd, "train", "--config", "configs/cartpole.yaml", *args,
         "--set", f"train.run_root={tmp_path}"],
        env,
    )  # fmt: skip
    assert solved.returncode == 0 and "(solved)" in solved.stdout, solved.stderr
    run_dir = _run_dir(solved.stdout)
    assert not (run_dir / "checkpoints").exists()
    frames = json.loads((run_dir / "summary.json").read_text())["frames"]
    updates = len((run_dir / "metrics.jsonl").read_text().splitlines())

    resumed = _run(
        [*troupe_cmd, "train", "--resume", str(run_dir), *args,
         "--set", f"train.total_frames={frames + 1}", "--set", "train.target_return=null"],
        env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    name = f"ckpt-{updates:09d}.pt"
    assert f"from {name} ({frames:,} frames, {updates} updates)" in resumed.stdout
    eval_return = float(re.search(r"eval return ([\d.]+)", resumed.stdout).group(1))
    assert eval_return >= 400, resumed.stdout
    import fsspec

    s3 = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    newest = sorted(s3.ls(f"{storage}/{run_dir.name}", detail=False))[-1]
    assert newest.endswith(f"ckpt-{updates + 1:09d}.pt")

    # The node with the run directory is lost: resume from the storage URL alone.
    shutil.rmtree(run_dir)
    url = f"{storage}/{run_dir.name}"
    again = _run(
        [*troupe_cmd, "train", "--resume", url, "--no-progress", "--address", ray_cluster,
         "--set", f"checkpoint.storage_options={{endpoint_url: '{endpoint}'}}",
         "--set", f"train.total_frames={frames + 2}"],
        env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"resuming {run_dir} from ckpt-{updates + 1:09d}.pt" in again.stdout
    assert float(re.search(r"eval return ([\d.]+)", again.stdout).group(1)) >= 400
    assert json.loads((run_dir / "metrics.jsonl").read_text())[M.UPDATES] == updates + 2
    newest = sorted(s3.ls(url, detail=False, refresh=True))[-1]
    assert newest.endswith(f"ckpt-{updates + 2:09d}.pt")
