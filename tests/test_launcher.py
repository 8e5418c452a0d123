"""`ray up` for real: the shipped deploy/local.yaml, rendered for three test hosts of our own
(tests/hosts.py: one head, two workers, each its own network, mount and PID namespace with an
sshd), launches a token-protected cluster with Ray's cluster launcher over SSH; a CartPole run
submitted through the `ray dashboard` tunnel makes the autoscaler add worker hosts for its
pending actors, survives losing one, gives an idle one back, and `ray down` leaves nothing.
Every command is the one deploy/README.md gives users, run from the repository root.

The tests in this module are the steps of one cluster's life and run in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from learner import metrics as M
from tests.envs import PACED_ID
from tests.hosts import TestHosts, host_files, missing_tools, sweep_stale
from tests.launcher import ROOT, Launcher, free_port, render, wheelhouse

_MISSING = missing_tools()
pytestmark = [
    pytest.mark.launcher,
    # .ci/run installs what the hosts need, so in CI a missing tool fails instead.
    pytest.mark.skipif(
        bool(_MISSING) and not os.environ.get("CI"),
        reason=f"test hosts need {', '.join(_MISSING)} (apt-get install openssh-server rsync)",
    ),
]

SERVE_PORT = 8270
"""`troupe serve` on the head; `ray attach -p` forwards the same port number here."""
SHORT = [
    "--set", "actors.envs_per_actor=8",  # 8 envs x 16 steps per segment
    "--set", "train.eval_interval_s=0",
    "--set", "train.target_return=null",
]  # fmt: skip
RUN = [
    *SHORT,
    "--set", "train.total_frames=1000000000",
    # Hosts join while this run trains: at CartPole's full speed it took ~1.6 of this
    # machine's 2 cores, and a joining host's install ran 3 times slower than with none.
    "--set", f"env.id={PACED_ID}",
    # Plain rounds: a compiled graph's driver and learner wait by spinning, on both cores,
    # and hosts joining meanwhile took 1.7 times as long (worker 2: 162 s against 98 s).
    # Compiled rounds across nodes, and a node lost under them: tests/test_two_nodes.py.
    "--set", "train.compiled_graph=false",
]  # fmt: skip
STEPS: list[tuple[str, float]] = []
"""(step, seconds) of this cluster's life, printed at the end for the README's transcript."""


class Cluster:
    def __init__(self, hosts: TestHosts, launcher: Launcher) -> None:
        self.hosts = hosts
        self.launcher = launcher
        self.head, *self.workers = hosts.hosts
        self.dashboard = ""
        self.serve = f"http://127.0.0.1:{SERVE_PORT}"
        self.job = ""
        self.down = False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sweep_stale()  # what an earlier session killed mid-test left
    base = host_files()
    hosts = TestHosts(base)
    launcher = found = None
    try:
        wheels = wheelhouse()
        began = time.monotonic()
        hosts.start(3)
        _step("3 test hosts (namespaces, bridge, sshd)", began)
        text, diff = render(
            hosts.hosts, hosts.key, wheels, min_workers=0, max_workers=2, idle_timeout_minutes=0.25
        )
        print(f"\ndeploy/local.yaml as rendered for the test hosts:\n{diff}")
        local = tmp_path_factory.mktemp("launcher")
        config = local / "cluster.yaml"
        config.write_text(text)
        (local / "home").mkdir()
        launcher = Launcher(config, home=local / "home", tmp=local)
        token = launcher.ray("get-auth-token", "--generate")
        assert token.returncode == 0, token.stderr

        began = time.monotonic()
        up = launcher.up()
        assert up.returncode == 0, f"ray up failed; see {launcher.log}\n{up.stdout[-3000:]}"
        _step("ray up -y (head: venv, packages, Ray)", began)

        found = Cluster(hosts, launcher)
        port = free_port()
        launcher.tunnel("dashboard", str(config), "--port", str(port), ready_port=port)
        found.dashboard = f"http://127.0.0.1:{port}"
        launcher.tunnel("attach", str(config), "-p", str(SERVE_PORT), ready_port=SERVE_PORT)
        yield found
    finally:
        if launcher is not None:
            launcher.close_tunnels()
            if not (found and found.down):
                launcher.down()
        hosts.stop()
        _print_steps()
        shutil.rmtree(base, ignore_errors=True)


def _step(what: str, began: float) -> None:
    STEPS.append((what, time.monotonic() - began))


def _print_steps() -> None:
    print("\nsteps of the cluster's life:")
    for what, seconds in STEPS:
        print(f"  {seconds:6.1f} s  {what}")


def _until(check, timeout_s: float, what: str, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def _http(url: str, body: dict | None = None, token: str | None = None):
    """(status code, decoded body); 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def _figures(cluster: Cluster, run: str = "lifecycle") -> dict | None:
    code, text = _http(f"{cluster.serve}/status?run={run}")
    return json.loads(text)["metrics"] if code == 200 else None


def _troupe(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    """The troupe CLI on this machine, as the user runs it against the cluster."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT, env={**cluster.launcher.env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _state(cluster: Cluster, what: str, **filters) -> list[dict]:
    """Ray's state API (`actors`, `nodes`) through the dashboard tunnel, with the cluster's
    token. Plain HTTP: Ray's client in this process keeps the first token it read, the test
    session's own."""
    query = urllib.parse.urlencode(
        {
            "limit": 1000,
            "filter_keys": list(filters),
            "filter_predicates": ["="] * len(filters),
            "filter_values": list(filters.values()),
        },
        doseq=True,
    )
    code, text = _http(f"{cluster.dashboard}/api/v0/{what}?{query}", token=cluster.launcher.token)
    assert code == 200, f"state API {what}: {code} {text[:500]}"
    return json.loads(text)["data"]["result"]["result"]


def _actor_ips(cluster: Cluster, class_name: str) -> list[str]:
    nodes = {n["node_id"]: n["node_ip"] for n in _state(cluster, "nodes", state="ALIVE")}
    actors = _state(cluster, "actors", state="ALIVE", class_name=class_name)
    return sorted(nodes.get(a["node_id"], "?") for a in actors)


def test_ray_up_starts_a_token_protected_head(cluster):
    launcher = cluster.launcher
    status = launcher.exec("ray status")
    assert "1 local.cluster.node" in status, status  # the head alone: min_workers is 0
    assert launcher.exec("cat ~/.ray/auth_token").strip() == launcher.token
    assert launcher.exec("echo $RAY_AUTH_MODE").strip() == "token"
    refused = launcher.exec("RAY_AUTH_TOKEN=wrong ray status > /dev/null 2>&1; echo $?")
    assert refused.strip() != "0", "ray status with a wrong token was let in"
    # The job API, through the `ray dashboard` tunnel: no token, no entry.
    assert _http(f"{cluster.dashboard}/api/jobs/")[0] == 401
    assert _http(f"{cluster.dashboard}/api/jobs/", token="wrong")[0] in (401, 403)
    assert _http(f"{cluster.dashboard}/api/jobs/", token=launcher.token)[0] == 200
    # `troupe serve` is up on the head, reached through `ray attach -p`; killed, it is back
    # within seconds.
    code, text = _http(f"{cluster.serve}/status")
    assert code == 200 and json.loads(text)["runs"] == [], text
    before = launcher.exec("pgrep -f 'bin/[t]roupe serve'").split()
    launcher.exec("pkill -9 -f 'bin/[t]roupe serve'")
    _until(lambda: _http(f"{cluster.serve}/status")[0] == 200, 60, "troupe serve to be back")
    after = launcher.exec("pgrep -f 'bin/[t]roupe serve'").split()
    assert len(after) == 1 and after != before


def test_autoscaling_follows_the_actor_count_and_survives_a_lost_host(cluster):
    launcher, hosts = cluster.launcher, cluster.hosts
    began = time.monotonic()
    submitted = _troupe(
        cluster, "submit", "configs/cartpole.yaml", "--address", cluster.dashboard,
        "--set", "name=lifecycle", "--set", "actors.num_actors=1", *RUN,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    cluster.job = submitted.stdout.strip()

    # The head holds no CPUs: the learner and the actor wait, and a worker host is launched.
    _until(
        lambda: _state(cluster, "actors", state="PENDING_CREATION", class_name="RolloutActor"),
        120, "the rollout actor to wait for resources",
    )  # fmt: skip
    first = _until(
        lambda: (f := _figures(cluster)) and f.get(M.UPDATES) and f[M.ACTORS_LIVE] == 1 and f,
        420, "a worker host to join and the run to train", every_s=3,
    )  # fmt: skip
    _step("troupe submit -> autoscaler starts worker 1 -> training", began)
    (learner_ip,) = _actor_ips(cluster, "LearnerActor")
    assert learner_ip != cluster.head.ip
    assert _actor_ips(cluster, "RolloutActor") == [learner_ip]

    # Changes need the cluster's token; refusals change nothing.
    scale = f"{cluster.serve}/scale"
    assert _http(scale, {"run": "lifecycle", "actors": 3})[0] == 401
    assert _http(scale, {"run": "lifecycle", "actors": 3}, "wrong")[0] == 403
    assert _http(scale, {"run": "lifecycle", "actors": 0}, launcher.token)[0] == 400
    assert _http(scale, {"run": "nope", "actors": 3}, launcher.token)[0] == 404
    assert _figures(cluster)[M.ACTORS_TARGET] == 1

    began = time.monotonic()
    out = launcher.exec("troupe scale lifecycle --actors 3")
    assert "now wants 3 rollout actors" in out, out
    _until(lambda: (f := _figures(cluster)) and f[M.ACTORS_PENDING] == 2, 60, "2 pending actors")
    three = _until(
        lambda: (f := _figures(cluster)) and f[M.ACTORS_LIVE] == 3 and f,
        420, "a second worker host to join", every_s=3,
    )  # fmt: skip
    _step("troupe scale --actors 3 -> autoscaler starts worker 2", began)
    assert three[M.UPDATES] > first[M.UPDATES]
    ips = _actor_ips(cluster, "RolloutActor")
    assert len(set(ips)) == 2 and cluster.head.ip not in ips, ips
    for worker in cluster.workers:  # the launcher's token reached every node
        assert hosts.ssh(worker, "cat ~/.ray/auth_token").stdout.strip() == launcher.token

    # Pull the plug on the worker that holds only rollout actors.
    (lost,) = [w for w in cluster.workers if w.ip != learner_ip]
    before = _figures(cluster)
    began = time.monotonic()
    hosts.kill(lost)
    hit = _until(
        lambda: (f := _figures(cluster)) and f[M.ACTOR_RESTARTS] > before[M.ACTOR_RESTARTS] and f,
        120, "the lost host's actors to be replaced",
    )  # fmt: skip
    assert hit[M.ACTORS_LIVE] + hit[M.ACTORS_PENDING] == 3
    _until(
        lambda: _figures(cluster)[M.UPDATES] > hit[M.UPDATES] + 20,
        60, "training to go on with the actors left",
    )  # fmt: skip
    hosts.boot(lost)  # the machine comes back; the autoscaler starts Ray on it again
    back = _until(
        lambda: (f := _figures(cluster)) and f[M.ACTORS_LIVE] == 3 and f,
        420, "the replacements to come up on the host that came back", every_s=3,
    )  # fmt: skip
    _step("worker 2 killed -> replaced actors pending -> host back, actors live", began)
    assert lost.ip in _actor_ips(cluster, "RolloutActor")
    assert back[M.UPDATES] > hit[M.UPDATES]

    # Metrics as the README tells users: `ray exec` for the CLI, `ray attach -p` for HTTP.
    shown = json.loads(launcher.exec("troupe metrics lifecycle --json"))
    assert shown["state"] == "running" and shown["run"].startswith("lifecycle-")
    assert shown["metrics"][M.ACTORS_LIVE] == 3
    code, text = _http(f"{cluster.serve}/metrics")
    assert code == 200
    samples = {
        (s.name, s.labels.get("run")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("troupe_actors_live", shown["run"])] == 3
    # A counter: never below the frames the status showed before this scrape.
    assert samples[("troupe_perf_frames_total", shown["run"])] >= shown["metrics"][M.FRAMES] > 0
    _until(lambda: _ray_exported(cluster), 60, "troupe's figures on Ray's metrics agent", 3)

    # Scale down: the newest actors go, their host idles and is given back.
    began = time.monotonic()
    code, text = _http(scale, {"run": "lifecycle", "actors": 1}, launcher.token)
    assert code == 200, text
    _until(lambda: _figures(cluster)[M.ACTORS_LIVE] == 1, 60, "1 live actor")
    _until(
        lambda: not any("raylet" in p for p in hosts.processes(lost)),
        180, "the idle host's raylet to be stopped", every_s=3,
    )  # fmt: skip
    _step("troupe scale --actors 1 -> idle worker released", began)
    alive = {n["node_ip"] for n in _state(cluster, "nodes", state="ALIVE")}
    assert alive == {cluster.head.ip, learner_ip}
    assert _figures(cluster)[M.UPDATES] > back[M.UPDATES]

    stopped = _troupe(cluster, "stop", cluster.job, "--address", cluster.dashboard)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    _until(lambda: _figures(cluster) is None, 60, "the run to leave /status")

    # The run directory, fetched as the README says: every update took one whole segment from
    # each actor live after its round (none twice, none partial: the lost host's segments
    # were dropped, once), and the versions went up by one.
    local = Path(launcher.env["TMPDIR"]) / "runs"
    fetched = launcher.ray("rsync-down", str(launcher.config), "~/troupe/runs/", f"{local}/")
    assert fetched.returncode == 0, fetched.stderr
    (run_dir,) = [p for p in local.iterdir() if p.name.startswith("lifecycle-")]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert record[M.BATCH_FRAMES] == record[M.ACTORS_LIVE] * 8 * 16, record
    assert records[-1][M.SEGMENTS_DROPPED] >= 2  # at least the lost host's two actors
    versions = [r[M.POLICY_VERSION] for r in records]
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    counts = [r[M.ACTORS_LIVE] for r in records]
    changes = [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]
    assert changes[0] == 1 and changes[-1] == 1 and 3 in changes, changes
    newest = max(p.name for p in (run_dir / "checkpoints").glob("ckpt-*"))
    assert newest == f"ckpt-{len(records):09d}.pt"  # the stop left a final checkpoint


def _ray_exported(cluster: Cluster) -> bool:
    """`ray_troupe_*` on some node's Ray metrics agent (its port, read on the head)."""
    ports = json.loads(
        cluster.launcher.exec(
            'python -c \'import json, ray; ray.init(address="auto", log_to_driver=False); '
            'print(json.dumps([[n["NodeManagerAddress"], n["MetricsExportPort"]] '
            'for n in ray.nodes() if n["Alive"]]))\' 2> /dev/null'
        )
        .strip()
        .splitlines()[-1]
    )
    for ip, port in ports:
        code, text = _http(f"http://{ip}:{port}/metrics")
        if code == 200 and "\nray_troupe_actors_live{" in text:
            return True
    return False


def test_plain_ray_job_submit_runs_the_entrypoint(cluster):
    """The plain Ray route from the README, through the same tunnel."""
    began = time.monotonic()
    done = cluster.launcher.ray(
        "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--",
        "python", "-m", "services.job", "--config", "configs/cartpole.yaml",
        "--set", "name=plainray", "--set", "actors.num_actors=1",
        "--set", "train.total_frames=4096", *SHORT,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout + done.stderr
    _step("ray job submit (a short run) to the end", began)
    listing = cluster.launcher.exec("ls ~/troupe/runs/plainray-*/")
    assert "model.pt" in listing and "metrics.jsonl" in listing and "events.out" in listing


def test_job_commands_name_an_unknown_job(cluster):
    out = _troupe(cluster, "status", "raysubmit_nope", "--address", cluster.dashboard)
    assert out.returncode == 2
    assert "raysubmit_nope" in out.stderr and "Traceback" not in out.stderr


def test_ray_down_leaves_no_ray_process(cluster):
    cluster.launcher.close_tunnels()  # the user's `ray dashboard` and `ray attach` end first
    began = time.monotonic()
    down = cluster.launcher.down()
    assert down.returncode == 0, down.stdout + down.stderr
    cluster.down = True
    _step("ray down -y", began)

    def leftovers():
        return {
            host.name: left
            for host in cluster.hosts.hosts
            if (
                left := [
                    p
                    for p in cluster.hosts.processes(host)
                    if not p.startswith("sshd") and "hostinit.py" not in p  # the machine
                ]
            )
        }

    # `ray down` stops Ray on the head only (Ray's local provider): `troupe serve` there ends
    # within seconds of it, and a worker still up stops its Ray once its watch has found the
    # head gone three times, 10 s apart.
    deadline = time.monotonic() + 90
    while leftovers() and time.monotonic() < deadline:
        time.sleep(1)
    assert not leftovers(), f"still running after ray down: {leftovers()}"
