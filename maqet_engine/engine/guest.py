"""Facade calls into the guest through its agent (qemu-ga on the VM's ``agent: true``
channel, owned by the runner): run a command, copy files in and out, read facts, and
attach to the serial console. See docs/guest-agent.md.

Every call is bounded: ``agent_timeout`` (default ``AGENT_TIMEOUT_S``) caps the wait for
the agent to be in step and each of its replies, so a VM whose agent is not running
fails with :class:`~maqet_engine.errors.AgentUnavailable` (exit 7) within it; ``exec``'s
``timeout`` caps the command's run (None: as long as it runs).

Bytes travel base64-encoded in stream messages of the runner's control socket
(docs/runner.md, "Streams"); the engine hashes what it sends and receives and compares
with ``sha256sum`` run in the guest (``verify``), falling back to reading a written file
back when the guest has no ``sha256sum``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.control.client import RunnerClient
from maqet_engine.engine import lifecycle
from maqet_engine.engine.context import EngineContext, operation
from maqet_engine.engine.lifecycle import call_vm, require_vm, stream_vm
from maqet_engine.engine.result import Result
from maqet_engine.errors import AgentCommandError, RuntimeFailure, UsageError

Progress = Callable[[int, "int | None"], None]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# cwd and env for guest-exec, which has neither a working directory nor "add these to the
# environment" (its env replaces the whole environment): a POSIX shell does both, then
# execs the command. $1: the directory or "", $2: how many K=V follow, then the command.
_WRAPPER = ('[ -z "$1" ] || cd "$1" || exit 126; n=$2; shift 2; '
            'while [ "$n" -gt 0 ]; do export "$1" || exit 126; shift; n=$((n - 1)); done; '
            'exec "$@"')
_SHELL = "/bin/sh"
# What the engine learns about a guest file with one command: size, mode, sha256.
_FILE_FACTS = 'stat -c "%s %a" "$1" && sha256sum < "$1"'
_CHMOD_SUM = 'chmod "$2" "$1" || exit 125; if [ "$3" = 1 ]; then sha256sum < "$1"; fi'
_CHMOD_FAILED = 125
_SHA256 = re.compile(r"\b([0-9a-f]{64})\b")


def _check_timeout(value: float | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not 0 < value < float("inf")):
        raise UsageError(f"{what} must be a positive, finite number of seconds, not {value!r}")


def _guest_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise UsageError(f"guest path {path!r} must be absolute",
                         hint="the agent's working directory is not yours")
    return path


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


# --- one agent command ---------------------------------------------------------------
@operation
def agent_command(ctx: EngineContext, name: str, command: str,
                  arguments: dict[str, Any] | None = None, *,
                  agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """One guest agent command (``guest-get-osinfo``, ``guest-ping``, ...); ``data``: its
    return value. The runner refuses ``guest-sync`` (it keeps the channel in step)."""
    _check_timeout(agent_timeout, "agent_timeout")
    data = call_vm(ctx, name, "agent", command=command, arguments=arguments or {},
                   agent_timeout=agent_timeout, ipc_timeout=agent_timeout + C.IPC_TIMEOUT_S)
    return Result(name=name, state="agent", data=data)


# --- exec ------------------------------------------------------------------------------
def exec_argv(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None) -> list[str]:
    """The argv guest-exec runs for ``argv`` in ``cwd`` with ``env`` added to the
    agent's environment (through ``/bin/sh`` when either is given)."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("give the command to run in the guest (a non-empty list of words)")
    if not env and not cwd:
        return list(argv)
    pairs = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(key):
            raise UsageError(f"bad environment variable name {key!r}",
                             hint="letters, digits and '_', not starting with a digit")
        pairs.append(f"{key}={value}")
    return [_SHELL, "-c", _WRAPPER, "maqet-exec", cwd or "", str(len(pairs)), *pairs,
            *argv]


@operation
def guest_exec(ctx: EngineContext, name: str, argv: Sequence[str], *,
               stdin: bytes | None = None, env: Mapping[str, str] | None = None,
               cwd: str | None = None, timeout: float | None = None,
               agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """Run ``argv`` in the guest (``guest-exec``) and wait for it.

    :param stdin: bytes the command reads on its standard input (at most
        ``AGENT_EXEC_MAX_INPUT``); None: no input (it reads end-of-file).
    :param env: variables added to the agent's environment; :param cwd: the working
        directory (both need ``/bin/sh`` in the guest).
    :param timeout: seconds the command may run (None: as long as it runs); a command
        still running then is an OperationTimeout (it goes on in the guest).
    :param agent_timeout: seconds for the agent to answer (each round trip, and being
        in step first).
    :return: ``data``: ``exitcode`` (None when a signal ended it), ``signal``, ``stdout``
        and ``stderr`` (bytes; qemu-ga keeps at most ``AGENT_EXEC_OUTPUT_CAP`` of each:
        ``stdout_truncated``/``stderr_truncated`` say it cut), ``pid``, ``seconds``.
        ``changed`` is true (a command may change anything); check mode runs nothing.
    :raise AgentUnavailable: the agent did not answer within ``agent_timeout``.
    """
    _check_timeout(timeout, "timeout")
    _check_timeout(agent_timeout, "agent_timeout")
    words = exec_argv(argv, env=env, cwd=cwd)
    if stdin is not None and len(stdin) > C.AGENT_EXEC_MAX_INPUT:
        raise UsageError(f"stdin of {len(stdin)} bytes is more than the guest agent takes "
                         f"({C.AGENT_EXEC_MAX_INPUT})",
                         hint="copy it into the guest with maqet cp and redirect from there")
    result = Result(name=name, state="exec")
    result.record("exec", command=list(argv))
    if ctx.check_mode:
        require_vm(ctx, name)
        return result
    # The runner sends something at least every AGENT_EXEC_HEARTBEAT_S while the
    # command runs; each wait for its next message is bounded by that.
    wait = agent_timeout + C.AGENT_EXEC_HEARTBEAT_S + C.IPC_TIMEOUT_S
    with stream_vm(ctx, name, "agent_exec", path=words[0], arg=words[1:],
                   input=stdin is not None, timeout=timeout, agent_timeout=agent_timeout,
                   ) as call:
        if stdin is not None:
            _expect(call, "ready", wait)
            for piece in _chunks(stdin, C.IPC_STREAM_CLIENT_CHUNK):
                call.send("data", base64.b64encode(piece).decode(), timeout=wait)
            call.send("end", timeout=wait)
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            kind, value = call.receive(wait)
            if kind == "result":
                break
            if kind == "stdout":
                out.append(base64.b64decode(value))
            elif kind == "stderr":
                err.append(base64.b64decode(value))
    result.data = {**value, "stdout": b"".join(out), "stderr": b"".join(err)}
    return result


def _expect(call: Any, wanted: str, timeout: float) -> Any:
    kind, value = call.receive(timeout)
    if kind != wanted:
        raise RuntimeFailure(f"the runner answered {call.method} with {kind!r}, not "
                             f"{wanted!r}", hint="a maqet bug: see the runner log")
    return value


def _shell(ctx: EngineContext, name: str, script: str, args: list[str],
           agent_timeout: float) -> tuple[int | None, str]:
    """``/bin/sh -c script sh args...`` in the guest: (exit code, stdout as text)."""
    ran = guest_exec(ctx, name, [_SHELL, "-c", script, "sh", *args],
                     timeout=agent_timeout, agent_timeout=agent_timeout).data
    return ran["exitcode"], ran["stdout"].decode("utf-8", "replace")


# --- files -------------------------------------------------------------------------------
@operation
def put_file(ctx: EngineContext, name: str, source: str | os.PathLike[str], dest: str, *,
             mode: int | str | None = "preserve", verify: bool = True,
             progress: Progress | None = None,
             agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """Copy the local file ``source`` to ``dest`` in the guest (an absolute path; the file
    is created or replaced, its directory must exist).

    :param mode: ``"preserve"`` (the source's permission bits), an int, or None (what
        qemu-ga creates: 0600 for a new file). Set with ``chmod`` in the guest.
    :param verify: compare the sha256 of what was sent with ``sha256sum`` in the guest
        (or, without it, with the file read back); a mismatch is a RuntimeFailure.
    :param progress: ``progress(bytes_sent, total)`` while it copies.
    :return: action ``put_file`` with ``path``, ``size``, ``sha256``, ``seconds`` and
        ``verified`` (``sha256sum``, ``read back`` or false).
    """
    _check_timeout(agent_timeout, "agent_timeout")
    dest = _guest_path(dest)
    try:
        info = os.stat(source)
    except OSError as err:
        raise UsageError(f"cannot read {source}: {err.strerror}") from err
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{source} is not a regular file")
    chmod = stat.S_IMODE(info.st_mode) if mode == "preserve" else mode
    if chmod is not None and (isinstance(chmod, bool) or not isinstance(chmod, int)
                              or not 0 <= chmod <= 0o7777):
        raise UsageError(f"mode {mode!r} is not a file mode")
    result = Result(name=name, state="put_file")
    action = result.record("put_file", path=dest, size=info.st_size)
    if ctx.check_mode:
        require_vm(ctx, name)
        return result
    started = time.monotonic()
    wait = agent_timeout + C.IPC_TIMEOUT_S
    digest = hashlib.sha256()
    sent = 0
    with open(source, "rb") as handle, \
            stream_vm(ctx, name, "agent_file_write", path=dest, agent_timeout=agent_timeout,
                      ) as call:
        _expect(call, "ready", wait)
        while piece := handle.read(C.IPC_STREAM_CLIENT_CHUNK):
            digest.update(piece)
            call.send("data", base64.b64encode(piece).decode(), timeout=wait)
            sent += len(piece)
            if progress is not None:
                progress(sent, info.st_size)
        call.send("end", timeout=wait)
        written = _expect(call, "result", wait)
    if written.get("size") != sent:
        raise RuntimeFailure(f"{name}:{dest}: the agent wrote {written.get('size')} of "
                             f"{sent} bytes")
    sha = digest.hexdigest()
    guest_sha: str | None = None
    asked = False  # whether the guest was asked for a sha256 already
    if chmod is not None:
        code, out = _shell(ctx, name, _CHMOD_SUM, [dest, f"{chmod:o}", "1" if verify else "0"],
                           agent_timeout)
        if code == _CHMOD_FAILED:
            raise RuntimeFailure(f"{name}:{dest}: chmod {chmod:o} failed in the guest")
        found = _SHA256.search(out) if code == 0 else None
        guest_sha, asked = (found.group(1) if found else None), verify
    verified: str | bool = False
    if verify:
        verified = _verify_put(ctx, name, dest, sha, guest_sha, asked, agent_timeout)
    action.update(sha256=sha, seconds=round(time.monotonic() - started, 3), verified=verified)
    if chmod is not None:
        action["mode"] = f"{chmod:04o}"
    return result


def _verify_put(ctx: EngineContext, name: str, dest: str, sha: str, guest_sha: str | None,
                asked: bool, agent_timeout: float) -> str:
    """How the guest's copy of ``dest`` was found to have sha256 ``sha``: ``sha256sum`` in
    the guest (``guest_sha``, or asked now unless ``asked``), else read back."""
    how = "sha256sum"
    if guest_sha is None and not asked:
        code, out = _shell(ctx, name, 'sha256sum < "$1"', [dest], agent_timeout)
        found = _SHA256.search(out) if code == 0 else None
        guest_sha = found.group(1) if found else None
    if guest_sha is None:  # no sha256sum in the guest: read it back
        how = "read back"
        digest = hashlib.sha256()
        _read(ctx, name, dest, digest.update, None, agent_timeout)
        guest_sha = digest.hexdigest()
    if guest_sha != sha:
        raise RuntimeFailure(f"{name}:{dest}: checksum mismatch after the copy: sent sha256 "
                             f"{sha[:16]}..., the guest has {guest_sha[:16]}...",
                             hint="copy it again")
    return how


def _read(ctx: EngineContext, name: str, path: str, sink: Callable[[bytes], object],
          progress: Callable[[int], None] | None, agent_timeout: float) -> int:
    wait = agent_timeout + C.IPC_TIMEOUT_S
    size = 0
    with stream_vm(ctx, name, "agent_file_read", path=path, agent_timeout=agent_timeout,
                   ) as call:
        _expect(call, "ready", wait)
        while True:
            kind, value = call.receive(wait)
            if kind == "result":
                break
            data = base64.b64decode(value)
            sink(data)
            size += len(data)
            if progress is not None:
                progress(size)
    if value.get("size") != size:
        raise RuntimeFailure(f"{name}:{path}: the agent read {value.get('size')} bytes, "
                             f"{size} arrived")
    return size


@operation
def fetch_file(ctx: EngineContext, name: str, source: str, dest: str | os.PathLike[str], *,
               preserve_mode: bool = True, verify: bool = True,
               progress: Progress | None = None,
               agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """Copy the guest file ``source`` (absolute) to the local ``dest`` (replaced
    atomically: written beside it, then renamed).

    With ``verify`` or ``preserve_mode``, one command in the guest reads the file's size
    (for ``progress``), mode and sha256 first (``stat``, ``sha256sum``); the bytes that
    arrive must have that sha256 (a file that changes meanwhile fails the copy). A guest
    without those tools gets an unverified copy (``verified`` false).
    :return: action ``fetch_file`` with ``path``, ``size``, ``sha256``, ``seconds``,
        ``verified``.
    """
    _check_timeout(agent_timeout, "agent_timeout")
    source = _guest_path(source)
    target = Path(os.path.abspath(dest))
    if target.is_dir():
        raise UsageError(f"{target} is a directory", hint="name the file to write")
    if not target.parent.is_dir():
        raise UsageError(f"directory {target.parent} does not exist")
    result = Result(name=name, state="fetch_file")
    action = result.record("fetch_file", path=str(target), source=source)
    if ctx.check_mode:
        require_vm(ctx, name)
        return result
    started = time.monotonic()
    total: int | None = None
    guest_mode: int | None = None
    expected: str | None = None
    if verify or preserve_mode:
        code, out = _shell(ctx, name, _FILE_FACTS, [source], agent_timeout)
        words = out.split()
        if code == 0 and len(words) >= 3 and words[0].isdigit():
            total, guest_mode, expected = int(words[0]), int(words[1], 8), words[2]
    digest = hashlib.sha256()
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".maqet-tmp",
                                     dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out_file:
            def sink(data: bytes) -> None:
                digest.update(data)
                out_file.write(data)

            size = _read(ctx, name, source, sink,
                         (lambda done: progress(done, total)) if progress else None,
                         agent_timeout)
        sha = digest.hexdigest()
        if verify and expected is not None and expected != sha:
            raise RuntimeFailure(f"{name}:{source}: checksum mismatch: the guest's file has "
                                 f"sha256 {expected[:16]}..., {sha[:16]}... arrived (did it "
                                 "change during the copy?)", hint="copy it again")
        if preserve_mode and guest_mode is not None:
            os.chmod(temporary, guest_mode & 0o777)
        else:
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    action.update(size=size, sha256=sha, seconds=round(time.monotonic() - started, 3),
                  verified="sha256sum" if verify and expected is not None else False)
    if preserve_mode and guest_mode is not None:
        action["mode"] = f"{guest_mode & 0o777:04o}"
    return result


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- facts -------------------------------------------------------------------------------
_FACTS = (("os", "guest-get-osinfo"), ("hostname", "guest-get-host-name"),
          ("interfaces", "guest-network-get-interfaces"), ("filesystems", "guest-get-fsinfo"))


@operation
def guest_info(ctx: EngineContext, name: str, *,
               agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """What the guest agent reports: ``data`` with ``agent`` (``version``), ``os``
    (``guest-get-osinfo``: id, name, version-id, pretty-name, kernel-release, machine),
    ``hostname``, ``interfaces`` (name, ``mac``, ``addresses`` as ``ADDRESS/PREFIX``),
    ``filesystems`` (``guest-get-fsinfo``). A fact whose command the agent does not
    support or refuses (disabled by its configuration) is None."""
    _check_timeout(agent_timeout, "agent_timeout")
    wait = agent_timeout + C.IPC_TIMEOUT_S
    with ctx.open_store(create=False) as store:
        socket = lifecycle.serving(ctx.paths, store, name)
    data: dict[str, Any] = {}
    with RunnerClient(socket, timeout=wait) as client:
        info = client.call("agent", command="guest-info", agent_timeout=agent_timeout)
        enabled = {c["name"] for c in info.get("supported_commands", []) if c.get("enabled")}
        data["agent"] = {"version": info.get("version")}
        for key, command in _FACTS:
            if command not in enabled:
                data[key] = None
                continue
            try:
                data[key] = client.call("agent", command=command, agent_timeout=agent_timeout)
            except AgentCommandError:
                data[key] = None
    if isinstance(data.get("hostname"), dict):
        data["hostname"] = data["hostname"].get("host-name")
    if isinstance(data.get("interfaces"), list):
        data["interfaces"] = [_interface(i) for i in data["interfaces"]]
    return Result(name=name, state="guest_info", data=data)


@operation
def guest_interfaces(ctx: EngineContext, name: str, *,
                     agent_timeout: float = C.AGENT_TIMEOUT_S) -> Result:
    """The guest's network interfaces as :func:`guest_info` gives them (``data``: the
    list), with one agent command (``guest-network-get-interfaces``) instead of all the
    facts."""
    raw = agent_command(ctx, name, "guest-network-get-interfaces",
                        agent_timeout=agent_timeout).data
    return Result(name=name, state="guest_info", data=[_interface(i) for i in raw or []])


def _interface(raw: dict[str, Any]) -> dict[str, Any]:
    return {"name": raw.get("name"), "mac": raw.get("hardware-address"),
            "addresses": [f"{a.get('ip-address')}/{a.get('prefix')}"
                          for a in raw.get("ip-addresses") or []],
            "ipv4": [a.get("ip-address") for a in raw.get("ip-addresses") or []
                     if a.get("ip-address-type") == "ipv4"],
            "ipv6": [a.get("ip-address") for a in raw.get("ip-addresses") or []
                     if a.get("ip-address-type") == "ipv6"]}


# --- the serial console ------------------------------------------------------------------
class ConsoleSession:
    """An attachment to a VM's serial console through its runner (from :func:`console`).

    ``writes``: whether this session types (one at a time; otherwise ``writer_pid`` is
    the one that does). :meth:`receive` gives console bytes (None once the console
    closed); :meth:`send` types. Wait for data with ``select`` on :meth:`fileno` (after
    :meth:`pending`). :meth:`close` detaches.
    """

    def __init__(self, call: Any, ready: dict[str, Any]) -> None:
        self._call = call
        self.writes = bool(ready.get("write"))
        self.writer_pid = ready.get("writer_pid")
        self.ended: str | None = None  # why the runner ended it

    def fileno(self) -> int:
        return int(self._call.fileno())

    def pending(self) -> bool:
        return bool(self._call.pending())

    def receive(self, timeout: float | None = None) -> bytes | None:
        """The next console bytes (blocks up to ``timeout``; None: the console closed)."""
        if self.ended is not None:
            return None
        kind, value = self._call.receive(timeout)
        if kind == "result":
            self.ended = str((value or {}).get("reason", "ended"))
            return None
        if kind != "data":
            return b""
        return base64.b64decode(value)

    def send(self, data: bytes) -> None:
        """Type ``data`` on the console (ignored by the runner unless :attr:`writes`)."""
        for piece in _chunks(data, C.IPC_STREAM_CLIENT_CHUNK):
            self._call.send("data", base64.b64encode(piece).decode())

    def close(self) -> None:
        self._call.close()

    def __enter__(self) -> ConsoleSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@operation
def console(ctx: EngineContext, name: str, *, write: bool = True,
            timeout: float = C.IPC_TIMEOUT_S) -> ConsoleSession:
    """Attach to the VM's serial console: every byte the guest writes from now on, and
    (``write``, unless another session types already) typing."""
    call = stream_vm(ctx, name, "console", write=write)
    try:
        ready = _expect(call, "ready", timeout)
    except BaseException:
        call.close()
        raise
    return ConsoleSession(call, ready)


__all__ = ["ConsoleSession", "agent_command", "console", "exec_argv", "fetch_file",
           "guest_exec", "guest_info", "put_file"]
