"""A real multi-node Ray cluster on localhost, made of `ray start` processes.

Each node is one `ray start --block` process in its own process group; stopping it (SIGTERM
to the group) takes its raylet, workers and, for the head, GCS and dashboard down with it,
without touching any other Ray on the machine (which `ray stop` would). Every port is picked
free and outside Ray's worker port range (10002-19999). Each worker node keeps its own temp
directory, as separate machines would: sharing the head's, a worker node's runtime-env agent
deletes and re-extracts the job's working directory, the very directory a `ray job submit`
driver on the head runs in (a vanished cwd made torch, imported late in such a driver, die
with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER_PORTS = range(10002, 20000)


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in WORKER_PORTS:
            return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class LocalCluster:
    """`head()` then `add_node()`; `shutdown()` stops every node this object started."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.nodes: list[subprocess.Popen] = []
        self.temp_dirs: list[str] = []
        self.metrics_ports: list[int] = []
        """Each node's Prometheus endpoint (Ray's metrics agent), where `ray.util.metrics`
        figures of the node's processes appear."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], name: str) -> None:
        self.metrics_ports.append(free_port())
        common = [
            "--block",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={self.metrics_ports[-1]}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--object-store-memory=300000000",
        ]
        ray = str(Path(sys.executable).with_name("ray"))
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 (the process owns it)
        self.nodes.append(
            subprocess.Popen(
                [ray, "start", *args, *common],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def head(self, num_cpus: int) -> None:
        self._start(
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
            "head",
        )
        self._wait(lambda: _listening(self.gcs_port) and _listening(self.dashboard_port), "head")

    def add_node(self, num_cpus: int) -> None:
        """Start a worker node and wait until the cluster counts it.

        Ray gives a starting node's raylet a fixed 30 s to register with the GCS, then `ray
        start` exits ("The current node timed out during startup"). With the test session's
        own Ray up beside this cluster on 2 cores, that ran out once in four full runs; such
        a node is stopped and started again, once.
        """
        before = self.alive_nodes()
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}"]
        for attempt in range(2):
            # Short, in /tmp: Ray's socket paths under it must fit in 107 characters.
            self.temp_dirs.append(tempfile.mkdtemp(prefix="ray-node-"))
            self._start(
                [*args, f"--temp-dir={self.temp_dirs[-1]}"], f"node{len(self.nodes)}-{attempt}"
            )
            try:
                self._wait(lambda: self.alive_nodes() > before, "worker node")
                return
            except RuntimeError:
                if attempt or self.nodes[-1].poll() is None:
                    raise
                _stop_group(self.nodes.pop())  # what the exited `ray start` left running
                self.metrics_ports.pop()

    def alive_nodes(self) -> int:
        """Alive nodes, asked of the cluster from a separate process (this one may be
        connected to another Ray)."""
        code = (
            f"import ray, logging; ray.init(address={self.address!r}, "
            "logging_level=logging.ERROR, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60
        )
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0

    def _wait(self, ready, what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                raise RuntimeError(f"ray start exited; see {self.log_dir}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not up after {timeout_s}s; see {self.log_dir}")

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            _stop_group(node)
        self.nodes.clear()
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self.temp_dirs.clear()


def _stop_group(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # `ray start --block` of a head can outlive SIGTERM for long after its children ended;
    # anything of the node's still alive in its group goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
