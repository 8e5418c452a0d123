"""Test hosts: machines of the project's own, as separate as one kernel allows, reached by SSH.

Each host is
- a network namespace with one veth into a bridge on this machine, an address from one private
  /24 that is used on those veths alone, and a default route via the bridge's address (Ray
  finds a node's own IP from the routing table; this machine forwards nothing, so no packet
  leaves the bridge);
- a mount namespace with a private /tmp (so /tmp/ray is per host), /dev/shm and home for the
  SSH user;
- a PID namespace whose PID 1 is `hostinit.py`, which reaps orphans and runs sshd, so a
  `ray stop` inside sees only that host's processes, and killing PID 1 takes down everything
  the host ran, as pulling a machine's plug does;
- Debian's sshd, with host keys and the login key made for this test session.

The SSH user is `troupe`, made on first use (no password; key logins only). Hosts share this
machine's filesystem except those private folders, so they see its Python, and packages come
from a wheelhouse on disk: nothing inside a host reaches any network but the bridge.

`stop()` ends every host (SIGKILL to its PID 1, which ends the whole PID namespace), deletes the
namespaces, the veths and the bridge; `sweep_stale()` removes what a killed test session left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "troupe"
HOME = Path("/home") / USER
PREFIX = "trp"
"""Every netns and link this harness makes is named trp<pid>..., so a later session can tell a
stale one (its pid gone) from one in use."""
INIT = Path(__file__).with_name("hostinit.py")
SUBNETS = [ipaddress.ip_network(f"10.{a}.{b}.0/24") for a in (213, 214) for b in range(64, 80)]
"""Candidate /24s for the bridge; the first with no route on this machine is taken."""
SSHD = "/usr/sbin/sshd"


def missing_tools() -> list[str]:
    """What this machine lacks to make test hosts (empty when it can)."""
    missing = [t for t in ("ip", "unshare", "ssh", "ssh-keygen", "rsync") if not shutil.which(t)]
    if not os.path.exists(SSHD):
        missing.append(SSHD)
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check)


@dataclass
class Host:
    name: str
    ip: str
    netns: str
    root: Path
    """This host's own files: home/, tmp/, its sshd config and host key, its console log."""
    init: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.init is not None and self.init.poll() is None


class TestHosts:
    """`start(n)` makes n hosts; `stop()` removes them and all they ran."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, base: Path) -> None:
        self.base = base
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.hosts: list[Host] = []
        self.key = base / "id_ed25519"
        self.subnet: ipaddress.IPv4Network | None = None

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def start(self, count: int) -> list[Host]:
        sweep_stale()
        _ensure_user()
        self.base.mkdir(parents=True, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(self.key))
        self.subnet = _free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        for i in range(count):
            ip = str(self.subnet.network_address + 10 + i)
            host = Host(f"host{i}", ip, f"{self.tag}h{i}", self.base / f"host{i}")
            self._make(host, i)
            self.hosts.append(host)
            self.boot(host)
        for host in self.hosts:
            wait_for_ssh(host.ip)
        return self.hosts

    def _make(self, host: Host, index: int) -> None:
        user = pwd.getpwnam(USER)
        home = host.root / "home"
        shutil.copytree("/etc/skel", home)  # what `useradd -m` gives a new user
        (home / ".ssh").mkdir(mode=0o700)
        shutil.copy(f"{self.key}.pub", home / ".ssh" / "authorized_keys")
        for path in [home, *home.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        (home / ".ssh" / "authorized_keys").chmod(0o600)
        host_key = host.root / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        (host.root / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {host.ip}",
                    f"HostKey {host_key}",
                    "PidFile none",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {USER}",
                    "AllowTcpForwarding yes",  # `ray dashboard`, `ray attach -p`
                    "X11Forwarding no",
                    "PrintMotd no",
                    "MaxStartups 100",  # the launcher opens many sessions at once
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        veth = f"{self.tag}v{index}"
        _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        _run("ip", "link", "set", veth, "master", self.bridge)
        _run("ip", "link", "set", veth, "up")
        inside = ["ip", "netns", "exec", host.netns]
        _run(*inside, "ip", "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "route", "add", "default", "via", self.gateway)

    def boot(self, host: Host) -> None:
        """Start the host's namespaces and sshd, as a machine boots: a fresh /tmp and /dev/shm,
        the home as it was."""
        tmp = host.root / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        tmp.chmod(0o1777)
        console = open(host.root / "console.log", "a")  # noqa: SIM115 (the process owns it)
        host.init = subprocess.Popen(
            [
                "ip", "netns", "exec", host.netns,
                "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
                "--propagation", "private", "--kill-child",
                sys.executable, str(INIT), "--hostname", host.name,
                "--home", str(host.root / "home"), "--tmp", str(tmp),
                "--", SSHD, "-D", "-e", "-f", str(host.root / "sshd_config"),
            ],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        console.close()

    def kill(self, host: Host) -> None:
        """Pull the plug: SIGKILL to everything the host runs."""
        if host.init is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.init.pid, signal.SIGKILL)
        host.init.wait()
        host.init = None

    def ssh(self, host: Host, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `command` on `host` as the SSH user, in a login shell as the launcher does."""
        login = f"bash --login -c {shlex.quote(command)}"
        return subprocess.run(
            ["ssh", *ssh_options(self.key), f"{USER}@{host.ip}", login],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def processes(self, host: Host) -> list[str]:
        """The command lines of every process the host runs (its PID namespace), read from
        outside it."""
        if not host.alive:
            return []
        ns = os.readlink(f"/proc/{_init_pid(host)}/ns/pid")
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") == ns:
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        return found

    def stop(self) -> None:
        for index, host in enumerate(self.hosts):
            self.kill(host)
            # The veth goes with its namespace, but only once the kernel has reclaimed that
            # (asynchronously): delete it now.
            _run("ip", "link", "del", f"{self.tag}v{index}", check=False)
            _run("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()
        _run("ip", "link", "del", self.bridge, check=False)


def _init_pid(host: Host) -> int:
    """The host's PID 1, seen from here: the child of `unshare`."""
    assert host.init is not None
    children = Path(f"/proc/{host.init.pid}/task/{host.init.pid}/children")
    # `ip netns exec` execs unshare, so init.pid is unshare itself; its only child is PID 1.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError(f"{host.name} has no init process")


def ssh_options(key: Path) -> list[str]:
    return [
        "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
    ]  # fmt: skip


def wait_for_ssh(ip: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((ip, 22), timeout=1).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"no sshd on {ip}:22 after {timeout_s}s")


def _ensure_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        _run("useradd", "--no-create-home", "--home-dir", str(HOME), "--shell", "/bin/bash", USER)
    # '*': no password works, yet the account is not locked ('!'), which sshd without PAM
    # would refuse even for a key.
    _run("usermod", "-p", "*", USER)
    HOME.mkdir(exist_ok=True)  # the mount point of each host's own home


def _free_subnet() -> ipaddress.IPv4Network:
    routes = _run("ip", "-4", "route", "show", "table", "all").stdout
    taken = [
        ipaddress.ip_network(word, strict=False)
        for line in routes.splitlines()
        for word in line.split()[:2]
        if "/" in word or word.count(".") == 3
    ]
    for subnet in SUBNETS:
        if not any(subnet.overlaps(net) for net in taken):
            return subnet
    raise RuntimeError("no free private /24 for the test hosts' bridge")


def host_files() -> Path:
    """A new folder for the hosts' own files (their homes hold a venv each: gigabytes). Not
    under /tmp: each host mounts its own /tmp, and these files must stay visible to it."""
    return Path(tempfile.mkdtemp(prefix=f"{FILES_PREFIX}{os.getpid()}-", dir="/var/tmp"))


FILES_PREFIX = "troupe-hosts-"


def sweep_stale() -> None:
    """Remove the namespaces, links, processes and files of test sessions that died without
    tearing down."""
    for folder in Path("/var/tmp").glob(f"{FILES_PREFIX}*-*"):
        pid = folder.name[len(FILES_PREFIX) :].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)

    def stale(name: str) -> bool:
        digits = name[len(PREFIX) :].split("h")[0].split("v")[0].split("br")[0]
        return digits.isdigit() and not Path(f"/proc/{digits}").exists()

    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX) and stale(name):
            _kill_netns(name)
            _run("ip", "netns", "del", name, check=False)
    for line in _run("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX) and stale(name):
            _run("ip", "link", "del", name, check=False)


def _kill_netns(name: str) -> None:
    for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
