"""N "hypervisor hosts" on this one machine, for the multi-host tests.

Each host is a network namespace with its own address, reached from the root namespace
through a bridge the harness creates, and runs its own ``sshd`` (Debian's binary, our
config, our host keys). The controller (this process, ansible-playbook, ssh) talks to
the hosts from the root namespace with real SSH and host key checking on. The hosts share
this machine's filesystem: what makes them separate hypervisors is each host's own maqet
home directory.

Layout (``base`` is /run/maqet-netns; not under /tmp, whose mode 1777 fails sshd's
StrictModes check of the authorized_keys path)::

    base/.lock                  global lock: stale sweep, prefix and subnet choice
    base/<prefix>.lock          held (flock) by the live run that owns <prefix>
    base/<prefix>/              the run's directory, removed at teardown
        id_ed25519[.pub]        the controller's key
        authorized_keys         that key, for root on every host
        known_hosts             every host's key, by address
        ssh_config              Host hv1..hvN for ``ssh -F``
        inventory.yml           group ``hypervisors`` for ansible
        hvN/                    sshd_config, host key, sshd.pid, sshd.log, maqet-home/

Names: netns ``<prefix>-hvN``, its veth's root end ``<prefix>-hvN`` (``net0`` inside),
bridge ``<prefix>-br``; a prefix is short so every name fits IFNAMSIZ (15 characters).
A run whose process died leaves its lock file unlocked: the next setup (of any prefix)
removes what it left (processes in its namespaces, namespaces, links, directory).

Usage::

    with Hypervisors(2) as hv:
        hv["hv1"].ssh("ip -br addr")
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from procs import alive, kill_pids, pids_mentioning  # tests/support/procs.py, beside this

DEFAULT_BASE = Path("/run/maqet-netns")
# Candidate subnets, first free one wins (10.247/16 is used by nothing common here).
SUBNET_POOL = tuple(ipaddress.ip_network(f"10.247.{i}.0/24") for i in range(64))
HOST_OFFSET = 10  # hvN gets .(10+N); the bridge gets .1
NS_IFNAME = "net0"  # the host's end of its veth, inside its namespace
IFNAMSIZ = 15
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it

# Bounded waits (seconds), with what they usually take here.
READY_TIMEOUT = 10.0  # sshd from exec to READY=1 and a banner: ~20-50 ms
STOP_TIMEOUT = 5.0  # sshd or a session after a signal: milliseconds
CONNECT_TIMEOUT = 5  # ssh ConnectTimeout: a stopped sshd refuses at once
COMMAND_TIMEOUT = 60.0  # host.run / host.ssh default
LOG_TAIL_LINES = 25


class HarnessError(RuntimeError):
    """The harness could not build or remove its hosts (message says why)."""


class CommandFailed(HarnessError):
    """A command of ``Host.run``/``Host.ssh`` with ``check=True`` exited non-zero."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.argv = list(argv)
        self.proc = proc
        super().__init__(f"$ {shlex.join(argv)}\nrc={proc.returncode}\n--- stdout\n"
                         f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")


# --- small tools ---------------------------------------------------------------------------

def _tool(name: str, *fallbacks: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    raise HarnessError(f"{name} not found: install openssh-server, openssh-client and "
                       "iproute2 (bash scripts/setup.sh does)")


def _ip(*args: str, missing_ok: bool = False) -> str:
    """Run ``ip ARGS``; with ``missing_ok`` a device or namespace that is not there is
    not an error (teardown of something already gone)."""
    argv = [_tool("ip", "/usr/sbin/ip", "/sbin/ip"), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        if missing_ok and re.search(r"Cannot find device|No such file|does not exist|"
                                    r"Invalid \"netns\" value", err):
            return ""
        raise HarnessError(f"$ {shlex.join(argv)}: {err or f'rc={proc.returncode}'}")
    return proc.stdout


def netns_names() -> list[str]:
    """Names of the network namespaces in ``ip netns list``."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def link_names() -> list[str]:
    """Names of the links of the root namespace."""
    return [link["ifname"] for link in json.loads(_ip("-j", "link", "show") or "[]")]


def _disable_ipv6(ifname: str) -> None:
    """No IPv6 (not even link-local) on our root-side links; a kernel without IPv6 has
    nothing to disable."""
    path = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
    with contextlib.suppress(FileNotFoundError):
        path.write_text("1\n")


def used_networks() -> list[tuple[ipaddress.IPv4Network, str]]:
    """IPv4 networks in use here: each address's network (``ip addr``) and each route's
    destination (``ip route``, every table) except the default route."""
    used = []
    for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for info in link.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            used.append((iface.network, f"address {iface} on {link['ifname']}"))
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst == "default":
            continue
        net = ipaddress.ip_network(dst, strict=False)
        used.append((net, f"route {dst} dev {route.get('dev', '?')}"))
    return used


def collisions(subnet: ipaddress.IPv4Network) -> list[str]:
    """What on this machine overlaps ``subnet`` (empty: free to use)."""
    return sorted({what for net, what in used_networks() if net.overlaps(subnet)})


def netns_pids(netns: str) -> list[int]:
    """PIDs of the processes in network namespace ``netns`` (``ip netns pids``)."""
    out = _ip("netns", "pids", netns, missing_ok=True)
    return [int(tok) for tok in out.split() if tok.isdigit() and int(tok) != os.getpid()]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _check_strict_modes_path(path: Path) -> None:
    """sshd's StrictModes refuses an authorized_keys file below a directory that is
    group/world-writable or not owned by root: say so before sshd does."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise HarnessError(
                f"{part} (mode {stat.filemode(st.st_mode)}, uid {st.st_uid}) would fail "
                f"sshd's StrictModes for files under {path}: use a base directory whose "
                "every component is root-owned and not group/world-writable")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by another setup for milliseconds
        yield
    finally:
        os.close(fd)


def _claim(lock_path: Path) -> int | None:
    """Lock ``lock_path`` for this process; None when a live process holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def purge_prefix(prefix: str, base: Path = DEFAULT_BASE) -> list[str]:
    """Remove everything a run with ``prefix`` made: processes in its namespaces and any
    process naming a file of its directory (its sshds, even in an orphaned namespace;
    ssh clients), then its links, namespaces and directory. Safe to call when nothing is
    there. Returns what could not be removed (empty on success)."""
    problems = []
    run_dir = base / prefix
    ours = [ns for ns in netns_names() if ns.startswith(f"{prefix}-")]
    pids = [pid for ns in ours for pid in netns_pids(ns)]
    if run_dir.is_dir():
        pids += pids_mentioning(*run_dir.iterdir())
    survivors = kill_pids(sorted(set(pids)))
    if survivors:
        problems.append(f"processes survived SIGKILL: {survivors}")
    for name in link_names():
        if name.startswith(f"{prefix}-"):
            try:
                _ip("link", "del", name, missing_ok=True)  # a veth's peer goes with it
            except HarnessError as exc:
                problems.append(str(exc))
    for ns in ours:
        try:
            _ip("netns", "del", ns, missing_ok=True)
        except HarnessError as exc:
            problems.append(str(exc))
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir.exists():
        problems.append(f"could not remove {run_dir}")
    return problems


def sweep_stale(base: Path = DEFAULT_BASE) -> list[str]:
    """Purge the runs under ``base`` whose owner died (lock file not held, or a
    directory without a lock file). Call with the global lock held. Returns the
    prefixes purged."""
    if not base.is_dir():
        return []
    prefixes = {p.stem for p in base.glob("*.lock") if not p.name.startswith(".")}
    prefixes |= {p.name for p in base.iterdir() if p.is_dir()}
    purged = []
    for prefix in sorted(prefixes):
        fd = _claim(base / f"{prefix}.lock")
        if fd is None:
            continue  # a live run
        try:
            problems = purge_prefix(prefix, base)
            if problems:
                raise HarnessError(f"stale run {prefix} not fully removed: {problems}")
            (base / f"{prefix}.lock").unlink(missing_ok=True)
            purged.append(prefix)
        finally:
            os.close(fd)
    return purged


# --- the hosts ------------------------------------------------------------------------------

@dataclass
class Host:
    """One hypervisor host: a network namespace with its own sshd and maqet home."""

    name: str  # hv1, the Host in ssh_config and the inventory hostname
    index: int
    netns: str  # <prefix>-hv1
    veth: str  # its veth's root-namespace end, enslaved to the bridge
    address: str  # its IPv4 address
    dir: Path  # <run dir>/hv1
    maqet_home: Path  # <run dir>/hv1/maqet-home
    harness: Hypervisors = field(repr=False)
    _sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _notify: socket.socket | None = field(default=None, repr=False)

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def sshd_pid(self) -> int | None:
        """The PID of this host's sshd while it runs."""
        if self._sshd is None or self._sshd.poll() is not None:
            return None
        return self._sshd.pid

    def sshd_log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.sshd_log, lines)

    # --- commands ---------------------------------------------------------------------
    def run(self, cmd: str | Sequence[str], *, check: bool = True,
            timeout: float = COMMAND_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside this host's namespace (``ip netns exec``), as this process's
        user, with its environment plus ``env``. A string goes through ``sh -c``."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = [_tool("ip", "/usr/sbin/ip", "/sbin/ip"), "netns", "exec", self.netns, *argv]
        return _run(full, check=check, timeout=timeout,
                    env={**os.environ, **env} if env else None)

    def ssh(self, cmd: str | Sequence[str], *, check: bool = True,
            timeout: float = COMMAND_TIMEOUT,
            options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on this host through the real ssh client (``ssh -F <ssh_config>
        hvN``): key auth, host key checking on. A sequence is quoted for the remote
        shell. ``options``: more ssh options, before the host name."""
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = [*self.harness.ssh_argv(), *options, self.name, "--", remote]
        return _run(argv, check=check, timeout=timeout)

    # --- down and up ------------------------------------------------------------------
    def down(self, how: str = "sshd") -> None:
        """Make this host unreachable: ``how="sshd"`` stops its sshd (a connection is
        refused at once), ``how="link"`` sets its interface down (a connection gets no
        answer: "No route to host" or ssh's ConnectTimeout)."""
        if how == "sshd":
            self.stop_sshd()
        elif how == "link":
            _ip("-n", self.netns, "link", "set", NS_IFNAME, "down")
        else:
            raise ValueError(f"how must be 'sshd' or 'link', not {how!r}")

    def up(self) -> None:
        """Undo :meth:`down` (either kind): link up, sshd running and answering."""
        _ip("-n", self.netns, "link", "set", NS_IFNAME, "up")
        if self.sshd_pid is None:
            self.start_sshd()
        self.wait_ready()

    def start_sshd(self) -> None:
        """Start this host's sshd in its namespace; :meth:`wait_ready` waits for it."""
        if self.sshd_pid is not None:
            return
        notify_path = self.dir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(str(notify_path))
        self._notify = sock
        # sshd sends READY=1 to NOTIFY_SOCKET (Debian's sshd speaks the systemd notify
        # protocol) once its listening socket is bound: readiness without polling.
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        argv = [_tool("ip", "/usr/sbin/ip", "/sbin/ip"), "netns", "exec", self.netns,
                SSHD, "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_log)]
        with self.sshd_log.open("ab") as log:
            self._sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=log, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until this host's sshd said READY=1, then read its SSH banner from the
        root namespace (proves the bridge path). Raises HarnessError with the log tail
        when sshd exits or is not ready within ``timeout``."""
        deadline = time.monotonic() + timeout
        if self._notify is not None:
            self._await_notify(deadline)
        try:
            with socket.create_connection((self.address, 22),
                                          timeout=max(deadline - time.monotonic(), 0.1)) as s:
                banner = s.makefile("rb").readline(256)
        except OSError as exc:
            raise self._not_ready(f"no SSH banner from {self.address}:22: {exc}") from exc
        if not banner.startswith(b"SSH-2.0-"):
            raise self._not_ready(f"{self.address}:22 answered {banner!r}, not an SSH banner")

    def _await_notify(self, deadline: float) -> None:
        assert self._sshd is not None and self._notify is not None
        pidfd = os.pidfd_open(self._sshd.pid)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._not_ready("sshd did not send READY=1 to NOTIFY_SOCKET in "
                                          f"{READY_TIMEOUT:g} s")
                ready, _, _ = select.select([self._notify, pidfd], [], [], remaining)
                if pidfd in ready:
                    rc = self._sshd.wait()
                    raise self._not_ready(f"sshd exited with {rc} before it was ready")
                if self._notify in ready and b"READY=1" in self._notify.recv(4096):
                    break
        finally:
            os.close(pidfd)
            self._close_notify()

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
            (self.dir / "notify.sock").unlink(missing_ok=True)

    def _not_ready(self, why: str) -> HarnessError:
        return HarnessError(f"host {self.name} ({self.netns}, {self.address}) did not come "
                            f"up: {why}\n--- tail of {self.sshd_log}\n{self.sshd_log_tail()}")

    def stop_sshd(self) -> None:
        """Stop this host's sshd (SIGTERM, then SIGKILL) by PID and wait for its exit.
        Sessions it started go on running (as after a real sshd restart)."""
        self._close_notify()
        proc, self._sshd = self._sshd, None
        if proc is None:
            return
        # SIGTERM; SIGKILL only if it is still there after STOP_TIMEOUT.
        if (proc.poll() is None and kill_pids([proc.pid], signal.SIGTERM)
                and kill_pids([proc.pid])):
            raise HarnessError(f"sshd {proc.pid} of {self.name} survived SIGKILL")
        proc.wait()  # reaps: it has exited
        self.pidfile.unlink(missing_ok=True)


def _run(argv: list[str], *, check: bool, timeout: float,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc)
    return proc


class Hypervisors:
    """``count`` hosts hv1..hvN in network namespaces behind a bridge, each with its own
    sshd and maqet home; a context manager (setup on enter, teardown on exit).

    ``prefix``: names' prefix (default: ``mq`` + 4 random hex digits, unused here);
    a dead run's leftovers with that prefix are removed at setup, a live run's make
    setup fail. ``subnet``: an IPv4 /24 (default: the first free one of
    :data:`SUBNET_POOL`); setup refuses one that overlaps any address or route here.
    ``python``: the hosts' ``ansible_python_interpreter`` (default: this venv's python).
    ``sshd_config_extra``: lines put first in every host's sshd_config (sshd keeps the
    first value of a keyword, so they override the harness's).
    """

    def __init__(self, count: int = 2, *, prefix: str | None = None,
                 subnet: str | None = None, base: Path = DEFAULT_BASE,
                 python: str | None = None, sshd_config_extra: str = "") -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"count must be 1..200, not {count}")
        if prefix is not None:
            if not PREFIX_RE.match(prefix):
                raise ValueError(f"prefix {prefix!r} must match {PREFIX_RE.pattern}")
            if len(f"{prefix}-hv{count}") > IFNAMSIZ:
                raise ValueError(f"prefix {prefix!r}: {prefix}-hv{count} exceeds IFNAMSIZ")
        self.count = count
        self.prefix = prefix
        self.requested_subnet = ipaddress.ip_network(subnet) if subnet else None
        if self.requested_subnet is not None and self.requested_subnet.prefixlen != 24:
            raise ValueError(f"subnet must be a /24, not {subnet}")
        self.base = base
        in_venv = sys.prefix != sys.base_prefix
        self.python = python or (str(Path(sys.prefix) / "bin" / "python") if in_venv
                                 else sys.executable)
        self.sshd_config_extra = sshd_config_extra
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[Host] = []
        self._lock_fd: int | None = None
        self.timings: dict[str, float] = {}

    # --- names and paths ----------------------------------------------------------------
    @property
    def dir(self) -> Path:
        assert self.prefix, "not set up"
        return self.base / self.prefix

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def bridge_address(self) -> str:
        assert self.subnet is not None, "not set up"
        return str(self.subnet.network_address + 1)

    @property
    def identity(self) -> Path:
        """The controller's private key (``.pub`` beside it)."""
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yml"

    def __getitem__(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def ssh_argv(self) -> list[str]:
        """``ssh -F <ssh_config>``: append options, a host name and a command."""
        return [_tool("ssh", "/usr/bin/ssh"), "-F", str(self.ssh_config)]

    def ssh_common_args(self) -> str:
        """The ssh options every connection of ansible uses (host key checking on)."""
        return shlex.join([
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
        ])  # no ConnectTimeout: ansible passes its own (``timeout``) first, and ssh keeps that

    @property
    def is_up(self) -> bool:
        return self._lock_fd is not None

    # --- setup ------------------------------------------------------------------------------
    def __enter__(self) -> Hypervisors:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def setup(self) -> Hypervisors:
        """Create the bridge, the hosts and their sshds; return when every sshd answers.
        A no-op when already set up; on failure, whatever was made is removed."""
        if self.is_up:
            return self
        if os.geteuid() != 0:
            raise HarnessError("network namespaces and bridges need root")
        for tool in ("ip", "ssh", "ssh-keygen"):
            _tool(tool, f"/usr/sbin/{tool}", f"/usr/bin/{tool}", f"/sbin/{tool}")
        if not os.access(SSHD, os.X_OK):
            raise HarnessError(f"{SSHD} not found: install openssh-server "
                               "(bash scripts/setup.sh does)")
        start = time.monotonic()
        try:
            self._claim_and_bridge()
            self.timings["bridge"] = time.monotonic() - start
            self._make_hosts()
            self.timings["setup"] = time.monotonic() - start
        except BaseException:
            self.teardown()
            raise
        return self

    def _claim_and_bridge(self) -> None:
        self.base.mkdir(mode=0o755, parents=True, exist_ok=True)
        _check_strict_modes_path(self.base)
        with _flock(self.base / ".lock"):
            sweep_stale(self.base)
            if self.prefix is None:
                self.prefix = self._free_prefix()
            fd = _claim(self.base / f"{self.prefix}.lock")
            if fd is None:
                owner = (self.base / f"{self.prefix}.lock").read_text().strip()
                raise HarnessError(f"prefix {self.prefix} belongs to a live run "
                                   f"(pid {owner or '?'})")
            self._lock_fd = fd
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            problems = purge_prefix(self.prefix, self.base)  # a crashed run's leftovers
            if problems:
                raise HarnessError(f"leftovers of {self.prefix} not removed: {problems}")
            self.subnet = self._choose_subnet()
            _ip("link", "add", self.bridge, "type", "bridge")
            _disable_ipv6(self.bridge)
            _ip("addr", "add", f"{self.bridge_address}/{self.subnet.prefixlen}",
                "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        self.dir.mkdir(mode=0o700)

    def _free_prefix(self) -> str:
        taken = {n.split("-", 1)[0] for n in [*netns_names(), *link_names()] if "-" in n}
        taken |= {p.name.split(".")[0] for p in self.base.iterdir()}
        while True:
            prefix = f"mq{secrets.token_hex(2)}"
            if prefix not in taken:
                return prefix

    def _choose_subnet(self) -> ipaddress.IPv4Network:
        if self.requested_subnet is not None:
            clash = collisions(self.requested_subnet)
            if clash:
                raise HarnessError(f"subnet {self.requested_subnet} collides with: "
                                   f"{'; '.join(clash)}")
            return self.requested_subnet
        for candidate in SUBNET_POOL:
            if not collisions(candidate):
                return candidate
        raise HarnessError(f"every subnet of the pool ({SUBNET_POOL[0]} ..) is in use here")

    def _make_hosts(self) -> None:
        keygen = _tool("ssh-keygen", "/usr/bin/ssh-keygen")
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                        f"maqet-netns controller {self.prefix}", "-f", str(self.identity)],
                       check=True, capture_output=True, timeout=30)
        authorized = self.dir / "authorized_keys"
        authorized.write_text(self.identity.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        assert self.subnet is not None
        for index in range(1, self.count + 1):
            name = f"hv{index}"
            host = Host(name=name, index=index, netns=f"{self.prefix}-{name}",
                        veth=f"{self.prefix}-{name}",
                        address=str(self.subnet.network_address + HOST_OFFSET + index),
                        dir=self.dir / name, maqet_home=self.dir / name / "maqet-home",
                        harness=self)
            self.hosts.append(host)
            self._make_host(host, keygen, authorized)
        for host in self.hosts:  # all sshds start, then each is awaited
            host.start_sshd()
        for host in self.hosts:
            host.wait_ready()
        self._write_known_hosts()
        self._write_ssh_config()
        self._write_inventory()

    def _make_host(self, host: Host, keygen: str, authorized: Path) -> None:
        assert self.subnet is not None
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", NS_IFNAME,
            "netns", host.netns)
        _disable_ipv6(host.veth)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        ip = _tool("ip", "/usr/sbin/ip", "/sbin/ip")
        script = "; ".join([
            "set -e",
            *(f"echo 1 > /proc/sys/net/ipv6/conf/{c}/disable_ipv6"
              for c in ("all", "default", "lo", NS_IFNAME)),
            f"{ip} addr add {host.address}/{self.subnet.prefixlen} dev {NS_IFNAME}",
            f"{ip} link set lo up",
            f"{ip} link set {NS_IFNAME} up",
        ])
        # /proc/sys/net/ipv6 may be absent (kernel without IPv6): ignore only that part.
        if not Path("/proc/sys/net/ipv6").exists():
            script = "; ".join(p for p in script.split("; ") if "ipv6" not in p)
        host.run(script)
        host.dir.mkdir(mode=0o700)
        host.maqet_home.mkdir()
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                        f"maqet-netns {host.netns}", "-f", str(host.host_key)],
                       check=True, capture_output=True, timeout=30)
        extra = self.sshd_config_extra.strip()
        host.sshd_config.write_text(f"""\
# sshd of {host.name} (maqet multi-host test harness), run as
# ip netns exec {host.netns} {SSHD} -D -f {host.sshd_config}
{extra + chr(10) if extra else ""}Port 22
ListenAddress {host.address}
HostKey {host.host_key}
PidFile {host.pidfile}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
StrictModes yes
PermitUserEnvironment no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
UseDNS no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")

    def _write_known_hosts(self) -> None:
        lines = []
        for host in self.hosts:
            keytype, key = host.host_key.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{host.address} {keytype} {key}\n")
        self.known_hosts.write_text("".join(lines))

    def _write_ssh_config(self) -> None:
        blocks = [f"# maqet multi-host test harness {self.prefix}: ssh -F {self.ssh_config} "
                  "hv1 true\n"]
        for host in self.hosts:
            blocks.append(f"""
Host {host.name}
    HostName {host.address}
    Port 22
    User root
    IdentityFile {self.identity}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    PasswordAuthentication no
    ConnectTimeout {CONNECT_TIMEOUT}
    LogLevel ERROR
""")
        self.ssh_config.write_text("".join(blocks))

    def _write_inventory(self) -> None:
        import yaml

        hosts = {
            host.name: {
                "ansible_host": host.address,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.identity),
                "ansible_ssh_common_args": self.ssh_common_args(),
                "ansible_python_interpreter": self.python,
                "maqet_home": str(host.maqet_home),
            }
            for host in self.hosts
        }
        inventory = {"all": {"children": {"hypervisors": {"hosts": hosts}}}}
        self.inventory.write_text(f"# maqet multi-host test harness {self.prefix}\n"
                                  + yaml.safe_dump(inventory, sort_keys=False))

    # --- teardown -----------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop every sshd and every process left in the namespaces, remove links,
        namespaces, bridge and directory, and release the prefix. Safe to call again."""
        start = time.monotonic()
        problems = []
        for host in self.hosts:
            # Sessions and whatever they left first, while their sshd still reaps them.
            others = [pid for pid in netns_pids(host.netns) if pid != host.sshd_pid]
            if kill_pids(others):
                problems.append(f"processes in {host.netns} survived SIGKILL")
            try:
                host.stop_sshd()
            except HarnessError as exc:
                problems.append(str(exc))
        if self.prefix is not None and self._lock_fd is not None:
            problems += purge_prefix(self.prefix, self.base)
            with _flock(self.base / ".lock"):  # no sweep sees the lock file half-gone
                (self.base / f"{self.prefix}.lock").unlink(missing_ok=True)
                os.close(self._lock_fd)
                self._lock_fd = None
        self.hosts = []
        self.timings["teardown"] = time.monotonic() - start
        if problems:
            raise HarnessError(f"teardown of {self.prefix} left: {problems}")

    def leftovers(self) -> list[str]:
        """Anything of this run's prefix still on the machine (empty after teardown)."""
        assert self.prefix is not None
        left = [f"netns {n}" for n in netns_names() if n.startswith(f"{self.prefix}-")]
        left += [f"link {n}" for n in link_names() if n.startswith(f"{self.prefix}-")]
        needle = os.fsencode(str(self.dir) + "/")
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid() and alive(int(entry)):
                with contextlib.suppress(OSError):
                    if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                        left.append(f"process {entry}")
        if self.dir.exists():
            left.append(f"directory {self.dir}")
        if (self.base / f"{self.prefix}.lock").exists():
            left.append(f"lock {self.base / f'{self.prefix}.lock'}")
        return left
