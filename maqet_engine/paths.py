"""Where maqet keeps its files.

Default layout follows XDG: data (SQLite store, per-VM directories with disks and
logs) under ``$XDG_DATA_HOME/maqet``, sockets and locks under
``$XDG_RUNTIME_DIR/maqet`` (``/tmp/maqet-<uid>`` without one), configuration under
``$XDG_CONFIG_HOME/maqet``. ``MAQET_HOME`` puts all three of one installation under
one directory; tests always set it.

AF_UNIX socket paths are limited to 107 bytes. Per-VM runtime directories are
named by the VM's numeric id (never reused) to stay short, and when a deep
``MAQET_HOME`` would still make them too long, the runtime root moves to a short
directory under ``/tmp`` derived from the home's path.

Nothing here creates a file: callers that write call :meth:`Paths.ensure_runtime`
or create directories themselves, so reading commands work on a missing home.
"""

from __future__ import annotations

import os
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Longest file name placed in a per-VM runtime directory, and a generous id width.
_LONGEST_RUNTIME_NAME = max(len(C.QMP_SOCKET), len(C.CONTROL_SOCKET), len(C.SERIAL_SOCKET))
_ID_WIDTH = 10


class VMRuntimePaths(Frozen):
    """Sockets and the lock of one VM's runner (short paths)."""

    __slots__ = ("root", "qmp_socket", "control_socket", "serial_socket", "lock_file")
    root: Path
    qmp_socket: Path
    control_socket: Path
    serial_socket: Path
    lock_file: Path


class VMDataPaths(Frozen):
    """Persistent files of one VM: its directory, disks created there, logs."""

    __slots__ = ("root", "runner_log", "qemu_log", "serial_log")
    root: Path
    runner_log: Path
    qemu_log: Path
    serial_log: Path


class Paths(Frozen):
    """The three roots of one installation: data, runtime, config."""

    __slots__ = ("data", "runtime", "config")
    data: Path
    runtime: Path
    config: Path

    @property
    def db(self) -> Path:
        return self.data / C.DB_FILE

    def vm_data(self, name: str) -> VMDataPaths:
        root = self.data / C.VMS_DIR / name
        return VMDataPaths(
            root=root,
            runner_log=root / C.RUNNER_LOG,
            qemu_log=root / C.QEMU_LOG,
            serial_log=root / C.SERIAL_LOG,
        )

    def vm_runtime(self, vm_id: int) -> VMRuntimePaths:
        root = self.runtime / str(vm_id)
        return VMRuntimePaths(
            root=root,
            qmp_socket=root / C.QMP_SOCKET,
            control_socket=root / C.CONTROL_SOCKET,
            serial_socket=root / C.SERIAL_SOCKET,
            lock_file=root / C.LOCK_FILE,
        )

    def ensure_runtime(self, vm_id: int) -> VMRuntimePaths:
        """Create the runtime root and the VM's runtime dir, both mode 0700."""
        rt = self.vm_runtime(vm_id)
        for directory in (self.runtime, rt.root):
            directory.mkdir(mode=C.RUNTIME_DIR_MODE, parents=True, exist_ok=True)
            os.chmod(directory, C.RUNTIME_DIR_MODE)
        return rt


def _fits(runtime: Path) -> bool:
    return len(os.fsencode(runtime)) + 1 + _ID_WIDTH + 1 + _LONGEST_RUNTIME_NAME <= C.UNIX_PATH_MAX


def _short_runtime(anchor: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(os.fsencode(anchor)).hexdigest()[:12]
    return Path("/tmp") / f"{C.APP_NAME}-{os.getuid()}-{digest}"


def resolve_paths(env: Mapping[str, str] | None = None) -> Paths:
    """Compute the paths of this installation from the environment."""
    env = os.environ if env is None else env
    home_value = env.get(C.ENV_HOME)
    if home_value:
        home = Path(home_value).expanduser().absolute()
        data = home / C.HOME_DATA_DIR
        runtime = home / C.HOME_RUNTIME_DIR
        config = home / C.HOME_CONFIG_DIR
        anchor = home
    else:
        user_home = Path(env.get("HOME") or Path.home())
        data = Path(env.get("XDG_DATA_HOME") or user_home / ".local" / "share") / C.APP_NAME
        config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config") / C.APP_NAME
        xdg_runtime = env.get("XDG_RUNTIME_DIR")
        runtime = (
            Path(xdg_runtime) / C.APP_NAME
            if xdg_runtime
            else Path("/tmp") / f"{C.APP_NAME}-{os.getuid()}"
        )
        anchor = data
    if not _fits(runtime):
        runtime = _short_runtime(anchor)
    return Paths(data=data, runtime=runtime, config=config)
