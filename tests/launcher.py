"""`ray up` on test hosts (tests/hosts.py): the shipped deploy/local.yaml rendered for them, a
wheelhouse the hosts install from, and the launcher CLI run from the repository root as a user
runs it, with a HOME and TMPDIR of the test's own (the token, the launcher's state, its SSH
control sockets' cache) so nothing of the user's is read or written."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.hosts import USER, Host

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "local.yaml"
RAY_WORKER_PORTS = range(10002, 20000)
"""Ports Ray may give its workers on this machine (the test session's own Ray runs here)."""
WHEEL_CACHE = Path("/var/tmp/troupe-wheelhouse")
DOWNLOADS = 4
"""pip processes filling the wheelhouse at once."""
RAY = str(Path(sys.executable).with_name("ray"))
REAPED = [sys.executable, str(Path(__file__).with_name("reaper.py"))]
"""Prefix of every launcher command: what its ssh leaves behind is ended and reaped."""


def wheelhouse(cache: Path = WHEEL_CACHE) -> Path:
    """A folder of wheels of every package this virtualenv holds (`pip freeze`, exact versions)
    and the build tools the editable install needs: what an air-gapped machine installs from.
    Kept per set of versions, so a rerun downloads nothing."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    folder = cache / hashlib.sha256(frozen.encode()).hexdigest()[:16]
    if (folder / ".complete").exists():
        return folder
    partial = cache / f"{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "requirements.txt").write_text(frozen)
    # pip spends ~0.4 s of CPU a package looking it up in the indexes: ~150 packages took
    # 67 s in one pip, 40 s in four at once (they wait on the network in turns).
    wanted = [line for line in frozen.splitlines() if line and not line.startswith("#")]
    wanted += ["setuptools", "wheel"]
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(partial)]
    with contextlib.ExitStack() as stack:
        running = []
        for i in range(DOWNLOADS):
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            proc = subprocess.Popen([*download, *wanted[i::DOWNLOADS]], stderr=err, text=True)
            running.append((proc, err))
        try:
            for proc, err in running:
                if proc.wait() != 0:
                    err.seek(0)
                    raise AssertionError(f"pip download failed:\n{err.read()[-3000:]}")
        except BaseException:
            # A failed (or interrupted) download fails the test: the rest would only go on
            # writing into a folder nothing will use.
            for proc, _ in running:
                proc.kill()
                proc.wait()
            shutil.rmtree(partial, ignore_errors=True)
            raise
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    folder.chmod(0o755)  # the hosts' user reads it
    return folder


def render(
    hosts: list[Host],
    key: Path,
    wheels: Path,
    min_workers: int,
    max_workers: int,
    idle_timeout_minutes: float,
) -> tuple[str, str]:
    """deploy/local.yaml for the test hosts, changed only where a user fills it in: the
    addresses, the SSH user and key, the package source and the autoscaling bounds (and, to
    save install time, the `tune` extra). Returns
    (the config, its unified diff against the shipped file)."""
    head, *workers = hosts
    shipped = SHIPPED.read_text()
    changes = [
        (r"^  head_ip: .*$", f"  head_ip: {head.ip}"),
        (r"^  worker_ips: .*$", f"  worker_ips: [{', '.join(w.ip for w in workers)}]"),
        (r"^  ssh_user: .*$", f"  ssh_user: {USER}"),
        (r"^  ssh_private_key: .*$", f"  ssh_private_key: {key}"),
        (r"^    WHEELS=;$", f"    WHEELS={wheels};"),
        (r"^min_workers: .*$", f"min_workers: {min_workers}"),
        (r"^max_workers: .*$", f"max_workers: {max_workers}"),
        (r"^idle_timeout_minutes: .*$", f"idle_timeout_minutes: {idle_timeout_minutes}"),
        # Ray Tune's pandas and pyarrow (`troupe tune`, tested on the embedded Ray) are not
        # what this test exercises; each host's install is shorter without them.
        (r"troupe\[s3,atari,mujoco,tune\]", "troupe[s3,atari,mujoco]"),
    ]
    text = shipped
    for pattern, line in changes:
        text, count = re.subn(pattern, line, text, flags=re.M)
        assert count == 1, f"deploy/local.yaml: {pattern!r} matched {count} lines, not 1"
    diff = "".join(
        difflib.unified_diff(
            shipped.splitlines(keepends=True),
            text.splitlines(keepends=True),
            "deploy/local.yaml",
            "the test hosts' copy",
        )
    )
    return text, diff


def free_port() -> int:
    """A free port on this machine outside Ray's worker port range."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in RAY_WORKER_PORTS:
            return port


class Launcher:
    """The launcher CLI (`ray up/exec/dashboard/attach/rsync-down/down`) on one config."""

    MARK = "@@troupe-test@@"

    def __init__(self, config: Path, home: Path, tmp: Path) -> None:
        self.config = config
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_", "PYTEST_")) and k != "PYTHONPATH"
        }
        self.env.update(
            HOME=str(home),  # ~/.ray/auth_token: the token `ray up` copies to the head
            TMPDIR=str(tmp),  # the launcher's cluster state and config cache
            RAY_AUTH_MODE="token",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_UP_enable_autoscaler_v2="1",  # Ray's default, said out loud (quiets a notice)
        )
        self.tunnels: list[subprocess.Popen] = []
        self.log = tmp / "launcher.log"

    @property
    def token(self) -> str:
        return (Path(self.env["HOME"]) / ".ray" / "auth_token").read_text().strip()

    def ray(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`ray ARGS` from the repository root; output kept in the log too."""
        began = time.monotonic()
        done = subprocess.run(
            [*REAPED, RAY, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        with open(self.log, "a") as log:
            log.write(f"$ ray {' '.join(args)}  ({time.monotonic() - began:.1f}s)\n")
            log.write(done.stdout + done.stderr + f"[exit {done.returncode}]\n")
        return done

    def up(self) -> subprocess.CompletedProcess:
        return self.ray("up", "-y", str(self.config))

    def down(self) -> subprocess.CompletedProcess:
        return self.ray("down", "-y", str(self.config))

    def exec(self, command: str, timeout: float = 120) -> str:
        """`ray exec CONFIG COMMAND` on the head; returns what COMMAND printed (the launcher's
        own lines stripped). Fails if COMMAND does."""
        wrapped = f"echo {self.MARK}; {command}; status=$?; echo {self.MARK}; exit $status"
        done = self.ray("exec", str(self.config), wrapped, timeout=timeout)
        assert done.returncode == 0, f"ray exec {command!r} failed:\n{done.stdout}{done.stderr}"
        parts = done.stdout.replace("\r\n", "\n").split(self.MARK + "\n")
        assert len(parts) >= 3, done.stdout
        return parts[1]

    def tunnel(self, *args: str, ready_port: int) -> subprocess.Popen:
        """A long-running `ray dashboard`/`ray attach -p` that forwards a port; returns once
        the local end accepts connections."""
        out = open(self.log, "a")  # noqa: SIM115 (the process owns it)
        proc = subprocess.Popen(
            [*REAPED, RAY, *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        out.close()
        self.tunnels.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"ray {' '.join(args)} exited; see {self.log}"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", ready_port), timeout=1).close()
                return proc
            time.sleep(0.2)
        raise TimeoutError(f"ray {' '.join(args)}: port {ready_port} not forwarded")

    def close_tunnels(self) -> None:
        for proc in self.tunnels:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.tunnels.clear()
