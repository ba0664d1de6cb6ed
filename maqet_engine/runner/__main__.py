"""``python -m maqet_engine.runner --name NAME --ready-fd N [--data D --runtime R --config C]
[--op ID] [--log-format text|json]``: the runner of one VM.

Spawned detached by :mod:`maqet_engine.control.spawn` (MAQET_HOME comes from the
environment unless the spawner's roots are given). ``--op`` is the operation id of the
engine call that started it (its start events and log lines carry it), ``--log-format``
the format of ``runner.log`` (docs/runner.md). Its stdin carries one JSON object
from the spawner, ``{"qemu_argv": [...], "qmp_fd": N, "agent_fd": M|null}``: the QEMU
command line, built from the spec by the spawner so that this process never imports the
definition package, and the inherited fds of the listening sockets that command line
names (QMP's, and the guest agent's for ``agent: true``; ``/dev/null`` is fine when it
will only re-adopt a live QEMU). Optional: ``fds``, more inherited fds that command line
names (tap devices of bridged networks), handed to QEMU and closed here; ``multicast``,
``[[group, port, ttl], ...]`` of the segments whose sockets QEMU made, confined to their
own interface and given their TTL before the VM counts as started
(``runner/multicast.py``); ``started_networks``, recorded with the start (the networks'
hashes, for ``restart_required``).

Life: lock -> launch or re-adopt QEMU -> QMP -> serial drain -> control socket ->
readiness line on the ready fd -> serve until QEMU exits -> record the exit -> remove
sockets -> release the lock -> exit.
"""

from __future__ import annotations

# --- No TLS in the runner: keep OpenSSL out of this process ---------------------------
# The runner talks to QEMU and to its clients over Unix sockets only. ``import asyncio``
# imports ``ssl``, whose OpenSSL initialisation alone costs ~4.5 MiB of resident memory
# per runner (one runner per VM). asyncio tolerates a missing ssl (``try: import ssl
# except ImportError: ssl = None``), so ``ssl`` is blocked while asyncio loads. qemu.qmp
# then does ``from ssl import SSLContext`` for type hints only: a stand-in module with an
# ``SSLContext`` that refuses to be built takes the place of ssl for the rest of this
# process. This happens here, in the runner's entry point, and nowhere else: imported as
# a module (tests, tools), this file changes nothing.
import sys

if __name__ == "__main__" and "asyncio" not in sys.modules:
    import types

    sys.modules["ssl"] = None  # type: ignore[assignment]  # "import ssl" -> ImportError
    import asyncio  # noqa: F401  # records ssl = None in asyncio's modules

    class _NoTLS:
        """``ssl.SSLContext`` stand-in: the runner never uses TLS."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("the maqet runner has no TLS support (Unix sockets only)")

    _ssl_stub = types.ModuleType("ssl", "stand-in for ssl in the maqet runner: no TLS")
    _ssl_stub.SSLContext = _NoTLS  # type: ignore[attr-defined]
    sys.modules["ssl"] = _ssl_stub
# ---------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from maqet_engine import constants as C  # noqa: E402
from maqet_engine import ops  # noqa: E402
from maqet_engine.errors import (  # noqa: E402
    HostError,
    MaqetError,
    StateConflict,
    UsageError,
    host_error,
)
from maqet_engine.ipc import locks  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from maqet_engine.runner.vm import Launch
from maqet_engine.paths import Paths, resolve_paths  # noqa: E402

_OPTIONS = ("--name", "--ready-fd", "--data", "--runtime", "--config", "--op", "--log-format")


def _report(ready_fd: int | None, message: dict[str, Any]) -> None:
    """Write the one readiness line and close the fd (the spawner may be gone)."""
    if ready_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(ready_fd, json.dumps(message).encode() + b"\n")
    with contextlib.suppress(OSError):
        os.close(ready_fd)


def parse_args(argv: list[str]) -> dict[str, str]:
    """``--option value`` pairs of :data:`_OPTIONS` (argparse would cost ~0.3 MiB per runner
    for an internal command line that only the spawner writes). ``--name`` is required."""
    if len(argv) % 2:
        raise UsageError(f"runner arguments must be '--option value' pairs, got {argv!r}")
    args: dict[str, str] = {}
    for option, value in zip(argv[::2], argv[1::2], strict=True):
        if option not in _OPTIONS:
            raise UsageError(f"unknown runner option {option!r}",
                             hint=f"options: {', '.join(_OPTIONS)}")
        args[option[2:].replace("-", "_")] = value
    if "name" not in args:
        raise UsageError("the runner needs --name NAME")
    if args.get("log_format", "text") not in C.LOG_FORMATS:
        raise UsageError(f"unknown runner log format {args['log_format']!r}",
                         hint=f"use one of: {', '.join(C.LOG_FORMATS)}")
    if "op" in args:
        ops.check(args["op"])
    return args


def read_launch(stream: Any) -> Launch | None:
    """What the spawner wrote to our stdin: QEMU's command line and the QMP socket fd it
    names (None when there is nothing to launch: re-adopt only)."""
    from maqet_engine.runner.vm import Launch

    data = stream.read(C.IPC_MAX_MESSAGE_BYTES + 1) if stream is not None else b""
    if len(data) > C.IPC_MAX_MESSAGE_BYTES:
        raise UsageError("the runner's launch data exceeds the IPC size limit")
    if not data.strip():
        return None
    try:
        launch = json.loads(data)
    except ValueError as err:
        raise UsageError(f"the runner's launch data is not JSON: {err}") from err
    argv = launch.get("qemu_argv") if isinstance(launch, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("the runner's launch data has no 'qemu_argv' list of strings")
    qmp_fd = launch.get("qmp_fd")
    if not _is_fd(qmp_fd):
        raise UsageError("the runner's launch data has no 'qmp_fd' (the QMP socket's fd)")
    agent_fd = launch.get("agent_fd")
    if agent_fd is not None and not _is_fd(agent_fd):
        raise UsageError("the runner's launch data has a bad 'agent_fd'")
    fds = launch.get("fds", [])
    if not isinstance(fds, list) or not all(_is_fd(fd) for fd in fds):
        raise UsageError("the runner's launch data has a bad 'fds' (a list of fds)")
    segments = launch.get("multicast", [])
    if not isinstance(segments, list) or not all(
            isinstance(t, list) and len(t) == 3 and isinstance(t[0], str)
            and _is_fd(t[1]) and _is_fd(t[2]) for t in segments):
        raise UsageError("the runner's launch data has a bad 'multicast' "
                         "(a list of [group, port, ttl])")
    networks = launch.get("started_networks")
    if networks is not None and not isinstance(networks, str):
        raise UsageError("the runner's launch data has a bad 'started_networks'")
    return Launch(argv=argv, qmp_fd=qmp_fd, agent_fd=agent_fd, fds=list(fds),
                  multicast=[(t[0], t[1], t[2]) for t in segments],
                  started_networks=networks)


def _is_fd(value: object) -> bool:
    """A non-negative int that is not a bool (fd numbers, ports, TTLs)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def _serve(name: str, paths: Paths, launch: Launch | None, ready_fd: int | None,
                 lock_fd: list[int], log: logging.Logger, op_id: str | None) -> int:
    from maqet_engine.runner.control import ControlSocket
    from maqet_engine.runner.handlers import Handlers
    from maqet_engine.runner.vm import SupervisedVM
    from maqet_engine.store import Store

    store = Store.open(paths.db, create=False)
    vm = SupervisedVM(name, paths, store, log, launch=launch, op_id=op_id)
    handlers = Handlers(vm)
    server = ControlSocket(paths, vm.record.id, handlers.dispatch, log, streams=handlers.streams)
    try:
        ready = await vm.start()  # under the starting operation's id (set by main)
        ops.current.set(None)  # from here each request brings its own (server.py)
        try:
            await server.start()
        except OSError as err:  # ENOSPC/EROFS on the runtime directory
            raise host_error(err, "serve the control socket", server.path) from err
    except BaseException as err:
        if vm.proc is not None and not vm.exited.is_set():
            await vm.abort_start(err)  # the start failed after all: leave no QEMU
        await server.close(0)
        await vm.close()
        store.close()
        raise
    log.info("ready: %s", ready, extra={"op": op_id})
    _report(ready_fd, ready)
    try:
        await vm.exited.wait()
    finally:
        await server.close(C.RUNNER_REPLY_GRACE_S)
        await vm.close()
        store.close()
        # Let go of the lock before clients see EOF: whoever waited for this runner's
        # end (a stop, a restart) may start the next runner right away.
        _release(lock_fd)
        await server.disconnect_clients(C.RUNNER_REPLY_GRACE_S)
    return C.EXIT_OK if vm.status.value == "stopped" else C.EXIT_RUNTIME


def _release(lock_fd: list[int]) -> None:
    while lock_fd:
        os.close(lock_fd.pop())


def _open_log(name: str, paths: Paths, fmt: str = "text") -> logging.Logger:
    """Log to the VM's ``runner.log`` in format ``fmt`` (``text`` or ``json``:
    :mod:`maqet_engine.log`); ``kill -USR1 PID`` dumps the stacks there too (as text).

    :raise HostError: the VM's directory or log cannot be created (full, read-only).
    """
    import faulthandler
    import signal

    from maqet_engine.log import runner_handler

    data = paths.vm_data(name)
    try:
        data.root.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        handler = logging.FileHandler(data.runner_log)
    except OSError as err:
        raise host_error(err, "open the runner log", data.runner_log) from err
    runner_handler(handler, vm=name, fmt=fmt)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    faulthandler.register(signal.SIGUSR1, file=handler.stream)
    return logging.getLogger(f"maqet_engine.runner.{name}")  # a child logger per VM


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    name = args["name"]
    paths = resolve_paths()
    if "data" in args and "runtime" in args:  # the spawner's paths, whatever our env says
        paths = Paths.of(data=Path(args["data"]), runtime=Path(args["runtime"]),
                         config=Path(args["config"]) if "config" in args else paths.config)
    os.umask(0o077)  # logs, sockets and whatever QEMU creates: the caller's only
    from maqet_engine.runner.control import ignore_recreate_requests

    ignore_recreate_requests()  # a client's request before we serve must not kill us
    ready_fd = int(args["ready_fd"]) if "ready_fd" in args else None
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)  # QEMU must not hold the spawner's pipe open
    op_id = args.get("op")
    token = ops.current.set(op_id)  # start-up lines carry the starting operation's id
    try:
        log = _open_log(name, paths, args.get("log_format", "text"))
    except HostError as err:  # a full disk or read-only home: say so through the pipe
        print(f"maqet runner: {err}", file=sys.stderr)
        _report(ready_fd, {"ok": False, "error": err.to_dict()})
        ops.current.reset(token)
        return err.exit_code
    lock_fd: list[int] = []  # emptied when released
    try:
        launch = read_launch(sys.stdin.buffer if sys.stdin is not None else None)
        from maqet_engine.store import Store

        with Store.open(paths.db, create=False) as store:
            record = store.require_vm(name)
        try:
            runtime = paths.ensure_runtime(record.id)
            fd = locks.acquire(runtime.lock_file, blocking=False)
        except OSError as err:
            raise host_error(err, "create the runtime directory or lock of", paths.runtime) \
                from err
        if fd is None:
            raise StateConflict(f"VM {name!r} already has a runner",
                                hint="it is already running")
        lock_fd.append(fd)
        log.info("runner started (lock %s)", runtime.lock_file)
        return asyncio.run(_serve(name, paths, launch, ready_fd, lock_fd, log, op_id))
    except MaqetError as err:
        log.error("%s", err)
        _report(ready_fd, {"ok": False, "error": err.to_dict()})
        return err.exit_code
    except BaseException as err:
        log.exception("runner failed")
        error = MaqetError(f"runner failed: {type(err).__name__}: {err}",
                           hint="see the runner log")
        _report(ready_fd, {"ok": False, "error": error.to_dict()})
        return C.EXIT_INTERNAL
    finally:
        _release(lock_fd)
        ops.current.reset(token)
        log.info("runner exiting")


if __name__ == "__main__":
    sys.exit(main())
