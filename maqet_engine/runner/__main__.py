"""``python -m maqet_engine.runner --name NAME --ready-fd N``: the runner of one VM.

Spawned detached by :mod:`maqet_engine.runner.spawn` (MAQET_HOME comes from the
environment). Life: lock -> launch or re-adopt QEMU -> QMP -> serial drain ->
control socket -> readiness line on the ready fd -> serve until QEMU exits ->
record the exit -> remove sockets -> release the lock -> exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.errors import MaqetError, StateConflict
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.runner import liveness


def _report(ready_fd: int | None, message: dict[str, Any]) -> None:
    """Write the one readiness line and close the fd (the spawner may be gone)."""
    if ready_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(ready_fd, json.dumps(message).encode() + b"\n")
    with contextlib.suppress(OSError):
        os.close(ready_fd)


async def _serve(name: str, paths: Paths, ready_fd: int | None, lock_fd: list[int],
                 log: logging.Logger) -> int:
    from maqet_engine.runner.handlers import Handlers
    from maqet_engine.runner.server import ControlServer
    from maqet_engine.runner.vm import SupervisedVM
    from maqet_engine.state import Store

    store = Store.open(paths.db, create=False)
    vm = SupervisedVM(name, paths, store, log)
    try:
        ready = await vm.start()
        server = ControlServer(vm.runtime.control_socket, Handlers(vm).dispatch, log)
        await server.start()
    except BaseException:
        await vm.close()
        raise
    log.info("ready: %s", ready)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maqet_engine.runner")
    parser.add_argument("--name", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--data", type=Path, help="data root (default: from the environment)")
    parser.add_argument("--runtime", type=Path, help="runtime root")
    parser.add_argument("--config", type=Path, help="config root")
    args = parser.parse_args(argv)
    paths = resolve_paths()
    if args.data and args.runtime:  # the spawner's paths, whatever our environment says
        paths = Paths(data=args.data, runtime=args.runtime, config=args.config or paths.config)
    data = paths.vm_data(args.name)
    data.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=data.runner_log, level=logging.INFO,
        format=f"%(asctime)s runner[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger(f"maqet.runner.{args.name}")
    import faulthandler
    import signal

    log_stream = logging.getLogger().handlers[0].stream  # type: ignore[attr-defined]
    faulthandler.register(signal.SIGUSR1, file=log_stream)  # `kill -USR1 PID`: stacks to the log
    ready_fd = args.ready_fd
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)  # QEMU must not hold the spawner's pipe open
    lock_fd: list[int] = []  # emptied when released
    try:
        from maqet_engine.state import Store

        with Store.open(paths.db, create=False) as store:
            record = store.require_vm(args.name)
        runtime = paths.ensure_runtime(record.id)
        fd = liveness.acquire(runtime.lock_file, blocking=False)
        if fd is None:
            raise StateConflict(f"VM {args.name!r} already has a runner",
                                hint="it is already running")
        lock_fd.append(fd)
        log.info("runner started (lock %s)", runtime.lock_file)
        return asyncio.run(_serve(args.name, paths, ready_fd, lock_fd, log))
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
        log.info("runner exiting")


if __name__ == "__main__":
    sys.exit(main())
