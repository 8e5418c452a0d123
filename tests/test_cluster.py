"""Runs on a real multi-node Ray cluster on localhost: `ray start --head` plus a worker node,
token auth on. Jobs go in through the real `ray job submit` CLI and `troupe submit`; a live run
is scaled 2 -> 4 -> 6 (beyond the cluster) -> 1 actors through the HTTP API and `troupe scale`,
watched through `troupe metrics`, `/status`, `/metrics` and Ray's own metrics agent, and
stopped with `troupe stop`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from learner import metrics as M
from tests.multinode import LocalCluster, free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
HEAD_CPUS, NODE_CPUS = 2, 3
"""5 CPUs: the learner takes 1, so at most 4 rollout actors (1 CPU each) fit."""
SMALL_RUN = [
    "--set", "actors.envs_per_actor=8",
    "--set", "train.eval_interval_s=0",
    "--set", "train.target_return=null",
]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def cluster(env, tmp_path_factory):
    nodes = LocalCluster(env, tmp_path_factory.mktemp("ray-nodes"))
    try:
        nodes.head(num_cpus=HEAD_CPUS)
        nodes.add_node(num_cpus=NODE_CPUS)
        yield nodes
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def server(cluster, env, tmp_path_factory):
    """`troupe serve` on the cluster; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--address", cluster.address,
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        _until(lambda: "serving" in log.read_text(), 60, f"troupe serve; see {log}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _troupe(env, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _until(check, timeout_s: float, what: str, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def _http(url: str, body: dict | None = None, token: str | None = None):
    """(status code, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _figures(server: str, run: str) -> dict | None:
    code, text = _http(f"{server}/status?run={run}")
    return json.loads(text)["metrics"] if code == 200 else None


def test_ray_job_submit_runs_the_entrypoint(cluster, env, tmp_path):
    """The plain Ray route from the README: `ray job submit ... -- python -m services.job`."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    out = subprocess.run(
        [ray_cli, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".",
         "--", "python", "-m", "services.job", "--config", "configs/cartpole.yaml",
         "--set", "name=plainray", "--set", "actors.num_actors=1",
         "--set", "train.total_frames=4096", "--set", f"train.run_root={tmp_path}", *SMALL_RUN],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout, out.stdout
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("plainray-")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1][M.FRAMES] >= 4096
    assert (run_dir / "model.pt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events beside metrics"


def test_submit_scale_watch_and_stop(cluster, server, env, tmp_path):
    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    submitted = _troupe(
        env, "submit", "configs/cartpole.yaml", "--address", cluster.dashboard_url,
        "--set", "name=scaled", "--set", "actors.num_actors=2",
        "--set", f"train.run_root={tmp_path}", *SMALL_RUN,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job

    try:
        live = _until(lambda: _figures(server, "scaled"), 180, "the run to register")
        _until(lambda: (_figures(server, "scaled") or {}).get(M.UPDATES), 120, "first update")
        live = _figures(server, "scaled")
        assert live[M.ACTORS_LIVE] == 2 and live[M.ACTORS_TARGET] == 2

        status = _troupe(env, "status", job, "--address", cluster.dashboard_url, "--json")
        assert json.loads(status.stdout)["status"] == "RUNNING", status.stdout + status.stderr

        # Changes need the cluster's token; refusals change nothing.
        assert _http(f"{server}/scale", {"run": "scaled", "actors": 4})[0] == 401
        assert _http(f"{server}/scale", {"run": "scaled", "actors": 4}, "wrong")[0] == 403
        assert _http(f"{server}/scale", {"run": "scaled", "actors": 0}, token)[0] == 400
        assert _http(f"{server}/scale", {"run": "nope", "actors": 3}, token)[0] == 404
        assert _figures(server, "scaled")[M.ACTORS_TARGET] == 2

        code, text = _http(f"{server}/scale", {"run": "scaled", "actors": 4}, token)
        assert code == 200, text
        four = _until(
            lambda: (f := _figures(server, "scaled")) and f[M.ACTORS_LIVE] == 4 and f,
            120, "4 live actors",
        )  # fmt: skip

        # Beyond the cluster's 4 actor slots: 2 wait for resources, training goes on.
        scale = _troupe(env, "scale", "scaled", "--actors", "6", "--address", cluster.address)
        assert scale.returncode == 0, scale.stderr
        pending = _until(
            lambda: (f := _figures(server, "scaled")) and f[M.ACTORS_PENDING] == 2 and f,
            60, "2 pending actors",
        )  # fmt: skip
        assert pending[M.ACTORS_LIVE] == 4 and pending[M.ACTORS_TARGET] == 6
        _until(
            lambda: _figures(server, "scaled")[M.UPDATES] > pending[M.UPDATES] + 5,
            60, "updates while actors are pending",
        )  # fmt: skip
        assert pending[M.UPDATES] > four[M.UPDATES]

        scale = _troupe(env, "scale", "scaled", "--actors", "1", "--address", cluster.address)
        assert scale.returncode == 0, scale.stderr
        _until(
            lambda: (f := _figures(server, "scaled"))
            and (f[M.ACTORS_LIVE], f[M.ACTORS_PENDING]) == (1, 0),
            60, "1 live actor",
        )  # fmt: skip

        # Bad requests get a clear error and leave the run alone.
        unknown = _troupe(env, "scale", "nope", "--actors", "2", "--address", cluster.address)
        assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr, unknown.stderr

        shown = _troupe(env, "metrics", "scaled", "--json", "--address", cluster.address)
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["state"] == "running" and status["run"].startswith("scaled-")
        assert status["metrics"][M.ACTORS_LIVE] == 1
        for key in (
            M.FRAMES,
            M.FPS,
            M.UPDATES,
            M.POLICY_VERSION,
            M.LOSS_POLICY,
            M.LOSS_VALUE,
            M.LOSS_ENTROPY,
            M.ENTROPY,
            M.GRAD_NORM,
            M.EPISODE_RETURN,
            M.UPTIME,
        ):
            assert isinstance(status["metrics"][key], int | float), key

        code, text = _http(f"{server}/metrics")
        assert code == 200
        samples = {
            (s.name, s.labels.get("run")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("troupe_actors_live", status["run"])] == 1
        assert samples[("troupe_perf_frames_total", status["run"])] > 0

        # The same figures through ray.util.metrics, on some node's metrics agent.
        _until(lambda: _ray_exported(cluster), 60, "troupe metrics on Ray's metrics agent", 2)
    finally:
        stopped = _troupe(env, "stop", job, "--address", cluster.dashboard_url)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    _until(lambda: _figures(server, "scaled") is None, 30, "the run to leave /status")
    _until(lambda: not _alive_actors(cluster), 60, "the job's actors to end")

    # The batch followed the live actor count: every update took one whole segment
    # (8 envs x 16 steps) from each live actor, and the counts went 2 -> 4 -> 1.
    (run_dir,) = tmp_path.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The stop (SIGTERM to the driver) left a final checkpoint of what was learned.
    newest = max(p.name for p in (run_dir / "checkpoints").iterdir())
    assert newest == f"ckpt-{len(records):09d}.pt"
    for record in records:
        assert record[M.BATCH_FRAMES] == record[M.ACTORS_LIVE] * 8 * 16
    counts = [r[M.ACTORS_LIVE] for r in records]
    changes = [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]
    assert changes[0] == 2 and changes[-1] == 1 and 4 in changes, changes


def _ray_exported(cluster: LocalCluster) -> bool:
    for port in cluster.metrics_ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                if "\nray_troupe_actors_live{" in r.read().decode():
                    return True
        except OSError:
            continue
    return False


def _alive_actors(cluster: LocalCluster) -> list:
    from ray.util.state import list_actors

    return list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")])


def test_job_commands_name_an_unknown_job(cluster, env):
    out = _troupe(env, "status", "raysubmit_nope", "--address", cluster.dashboard_url)
    assert out.returncode == 2
    assert "raysubmit_nope" in out.stderr and "Traceback" not in out.stderr
