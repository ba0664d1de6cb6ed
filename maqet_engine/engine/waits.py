"""Facade calls that wait for a running guest, and read what its console printed.

Every wait counts from **this boot** (this QEMU's start, or the guest's last reset): a
marker an earlier boot printed never satisfies it.

- :func:`wait_console`: a regex on the serial console (the runner's ``serial_wait``);
- :func:`wait_ssh`: the guest's SSH server answers through its forward (the ``SSH-``
  banner, read with a 1-3 s timeout: slirp accepts a forwarded connection before
  anything listens in the guest, so an open port means nothing, and OpenSSH under TCG
  livelocks on probes much shorter than that) and, for a guest that prints its host keys
  (cloud-init), the VM's known_hosts holds them;
- :func:`wait_agent`: the guest agent (qemu-ga on the VM's ``agent: true`` channel)
  answers;
- :func:`wait_ready`: several of those against one deadline, in a fixed order (console,
  then SSH, then the agent);
- :func:`read_console`: the text between two console offsets.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from maqet_engine import constants as C
from maqet_engine.engine import runstate
from maqet_engine.engine.api import check_timeout
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.guest import agent_command
from maqet_engine.engine.lifecycle import call_vm
from maqet_engine.engine.result import Result
from maqet_engine.engine.view import vm_view
from maqet_engine.errors import AgentUnavailable, OperationTimeout, StateConflict, UsageError

BOOT = "boot"  # a console offset: where the current boot began


@operation
def wait_console(ctx: EngineContext, name: str, pattern: str, *, since: int | str = BOOT,
                 timeout: float = C.SERIAL_WAIT_TIMEOUT_S) -> Result:
    """Wait until ``pattern`` (a regex, matched line by line with terminal escapes
    stripped) appears on the serial console after offset ``since`` (default: the start
    of this boot); ``data``: ``{"match", "offset"}`` (offset: where to continue from)."""
    check_timeout(timeout)
    data = call_vm(ctx, name, "serial_wait", pattern=pattern, since=since, timeout=timeout,
                   ipc_timeout=timeout + C.IPC_TIMEOUT_S)
    return Result(name=name, state="wait", data=data)


@operation
def read_console(ctx: EngineContext, name: str, *, since: int | str = BOOT,
                 until: int | None = None,
                 max_chars: int = C.SERIAL_READ_MAX_CHARS) -> Result:
    """What the console printed from offset ``since`` (default: this boot's start) to
    ``until`` (default: now), escape sequences and carriage returns removed; the last
    ``max_chars`` when there is more. ``data``: ``text``, ``since``/``until`` (the range
    really covered), ``offset`` (the console's end now), ``truncated``."""
    data = call_vm(ctx, name, "serial_read", since=since, until=until, max_chars=max_chars)
    return Result(name=name, state="read", data=data)


@operation
def wait_ssh(ctx: EngineContext, name: str, timeout: float = C.SSH_WAIT_TIMEOUT_S) -> Result:
    """Wait until the guest can be reached over SSH: its server's banner answers through
    the VM's forward to its SSH port (``ssh.port``, default 22), and, for a VM with a
    ``cloud_init`` seed that has no known_hosts yet (a first boot, or a new instance),
    its runner has written the host keys the guest printed on its console in this boot.

    ``data``: ``host``, ``port`` (where to connect), ``user``, ``known_hosts`` (the
    file's path, None when the guest printed no keys), ``host_keys``, ``banner``.

    :raise UsageError: the VM has no user-net forward to its SSH port.
    :raise StateConflict: the VM does not run, or stops while waiting.
    :raise OperationTimeout: no banner (or no keys) within ``timeout`` seconds.
    """
    check_timeout(timeout)
    deadline = time.monotonic() + timeout
    view = _view(ctx, name)
    ssh = view["ssh"]
    if ssh["host"] is None:
        raise UsageError(
            f"VM {name!r} has no user-net forward to its SSH port {ssh['guest_port']}",
            hint="add one, e.g. network: [{type: user, forward: [{host: auto, guest: "
                 f"{ssh['guest_port']}}}]}}]")
    if "cloud_init" in view["spec"] and view["known_hosts"] is None:
        # Keys first: cloud-init prints them after sshd started, and every banner probe
        # costs an emulated guest an SSH handshake it would rather spend booting.
        left = _left(deadline, timeout, "SSH host keys")
        call_vm(ctx, name, "host_keys", timeout=left, ipc_timeout=left + C.IPC_TIMEOUT_S)
        view = _view(ctx, name)
        ssh = view["ssh"]
    banner = _banner(ctx, name, ssh["host"], ssh["port"], deadline, timeout)
    view = _view(ctx, name)
    data = {"host": ssh["host"], "port": ssh["port"], "user": view["ssh"]["user"],
            "known_hosts": view["known_hosts"], "host_keys": view["ssh"]["host_keys"],
            "banner": banner}
    return Result(name=name, state="wait", data=data, vm=view)


@operation
def wait_agent(ctx: EngineContext, name: str,
               timeout: float = C.SSH_WAIT_TIMEOUT_S) -> Result:
    """Wait until the guest agent answers: qemu-ga in the guest, on the VM's
    ``agent: true`` channel (``guest-info``, after the runner brought the channel in
    step). A guest still booting gets until ``timeout``; an agent that closes its port
    meanwhile (a reboot) is waited for again. ``data``: ``version`` (qemu-ga's).

    :raise AgentUnavailable: the VM runs without an agent channel (at once), or no agent
        answered within ``timeout``.
    :raise StateConflict: the VM does not run, or stops while waiting.
    """
    check_timeout(timeout)
    deadline = time.monotonic() + timeout
    _running(ctx, name)
    while True:
        left = max(deadline - time.monotonic(), C.AGENT_WAIT_MIN_S)
        try:
            info = agent_command(ctx, name, "guest-info", agent_timeout=left).data
        except AgentUnavailable:
            # Asked again only while time is left and the channel can still come up (it
            # closed under the request: a reboot). No channel, or QEMU gone: as raised.
            if deadline - time.monotonic() <= C.AGENT_WAIT_MIN_S:
                raise
            _running(ctx, name)
            agent = call_vm(ctx, name, "status").get("agent")
            if agent is None or agent.get("state") == C.AGENT_CLOSED:
                raise
            continue
        return Result(name=name, state="wait", data={"version": info.get("version")})


@operation
def wait_ready(ctx: EngineContext, name: str, *, console: str | None = None,
               ssh: bool = False, agent: bool = False,
               timeout: float = C.SSH_WAIT_TIMEOUT_S, since: int | str = BOOT) -> Result:
    """Wait for each condition asked for, in order, within one ``timeout``: ``console``
    (a regex on the console after ``since``, default this boot's start), then ``ssh``
    (:func:`wait_ssh`), then ``agent`` (:func:`wait_agent`). ``data``: one entry per
    condition (``console``: match and offset; ``ssh``: as wait_ssh's; ``agent``: as
    wait_agent's). Nothing asked for returns at once."""
    check_timeout(timeout)
    deadline = time.monotonic() + timeout
    result = Result(name=name, state="wait", data={})
    if console is not None:
        result.data["console"] = wait_console(
            ctx, name, console, since=since,
            timeout=_left(deadline, timeout, repr(console))).data
    if ssh:
        reached = wait_ssh(ctx, name, timeout=_left(deadline, timeout, "SSH"))
        result.data["ssh"] = reached.data
        result.vm = reached.vm
    if agent:
        result.data["agent"] = wait_agent(
            ctx, name, timeout=_left(deadline, timeout, "the guest agent")).data
    return result


# --- helpers -----------------------------------------------------------------------------
def _left(deadline: float, timeout: float, what: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OperationTimeout(f"{what}: not ready within {timeout:g} s")
    return remaining


def _running(ctx: EngineContext, name: str) -> tuple[Any, runstate.RunView]:
    """The VM's record and run view (one probe); a StateConflict when it does not run."""
    with ctx.open_store(create=False) as store:
        record = store.require_vm(name)
    run = runstate.probe(ctx.paths, record)
    if not run.active:
        raise StateConflict(f"VM {name!r} is {run.status.value}", hint="start it first")
    return record, run


def _view(ctx: EngineContext, name: str) -> dict[str, Any]:
    record, run = _running(ctx, name)
    return vm_view(record, ctx.paths, run)


def _banner(ctx: EngineContext, name: str, host: str, port: int, deadline: float,
            timeout: float) -> str:
    """The SSH server's identification line, read through the forward; retried with a
    short bounded back-off until ``deadline`` (the VM must keep running meanwhile)."""
    pause = C.SSH_PROBE_PAUSE_FIRST_S
    why = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OperationTimeout(
                f"the SSH server of {name!r} did not answer at {host}:{port} within "
                f"{timeout:g} s ({why})",
                hint=f"see the guest's console: maqet logs {name}")
        try:
            banner = _read_banner(host, port, remaining)
        except OSError as err:
            why = f"last try: {err.strerror or err}"
        else:
            if banner is not None:
                return banner
            why = "last try: the connection closed without a banner (nothing listens yet)"
        _running(ctx, name)  # still? (a stopped VM is a StateConflict, not a timeout)
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, C.SSH_PROBE_PAUSE_MAX_S)


def _read_banner(host: str, port: int, remaining: float) -> str | None:
    """Connect and read lines until one starts with ``SSH-`` (RFC 4253 lets a server send
    other lines first); None when the connection ends, or stays silent for
    ``SSH_BANNER_READ_TIMEOUT_S``, before that."""
    with socket.create_connection((host, port),
                                  timeout=min(remaining, C.SSH_BANNER_READ_TIMEOUT_S)) as sock:
        sock.settimeout(min(remaining, C.SSH_BANNER_READ_TIMEOUT_S))
        data = b""
        try:
            while len(data) < C.SSH_BANNER_MAX_BYTES:
                chunk = sock.recv(C.SSH_BANNER_MAX_BYTES - len(data))
                if not chunk:
                    return None
                data += chunk
                for line in data.split(b"\n")[:-1]:
                    if line.startswith(b"SSH-"):
                        return line.rstrip(b"\r").decode("ascii", "replace")
        except TimeoutError:
            return None
    return None
