"""Where maqet keeps its files.

Default layout follows XDG: data (SQLite store, per-VM directories with disks and
logs) under ``$XDG_DATA_HOME/maqet``, sockets and locks under
``$XDG_RUNTIME_DIR/maqet`` (without one: ``/run/maqet`` for root, ``/tmp/maqet-<uid>``
for anyone else), configuration under ``$XDG_CONFIG_HOME/maqet``. ``MAQET_HOME`` puts
all three of one installation under one directory; tests always set it.

AF_UNIX socket paths are limited to 107 bytes. Per-VM runtime directories are
named by the VM's numeric id (never reused) to stay short, and when a deep
``MAQET_HOME`` would still make them too long, the runtime root moves to a short
directory under ``/tmp`` (``/run`` for root) derived from the home's path.

Runtime directories in ``/tmp`` have predictable names, so another local user can
create one first (a directory of theirs, or a symlink to one). :meth:`Paths.ensure_runtime`
therefore never follows a symlink and never adopts a directory it does not own: it
opens the parent ``O_DIRECTORY|O_NOFOLLOW``, ``mkdir``s at that fd, opens the result
``O_NOFOLLOW`` and checks the open directory (``fstat``): a directory owned by the
caller, not writable by group or others. An existing one that fails is refused
(:class:`~maqet_engine.errors.UnsafePath`, exit 6), never repaired: it may hold what
another user planted, and a deterministic name cannot move elsewhere without every
process of the installation agreeing on the new one.

Nothing here creates a file: callers that write call :meth:`Paths.ensure_runtime`
or create directories themselves, so reading commands work on a missing home.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Longest file name placed in a per-VM runtime directory, and a generous id width.
_LONGEST_RUNTIME_NAME = max(len(C.QMP_SOCKET), len(C.CONTROL_SOCKET), len(C.SERIAL_SOCKET),
                            len(C.AGENT_SOCKET))
_ID_WIDTH = 10


class VMRuntimePaths(Frozen):
    """Sockets of one VM's runner (short paths), and its locks. The locks are in the
    data directory (``data/locks/ID.*``): the runtime directory may vanish under a
    live runner (tmp cleaners, logind at logout), and "is the runner alive" must not."""

    __slots__ = ("root", "qmp_socket", "control_socket", "serial_socket", "agent_socket",
                 "lock_file", "start_lock")
    root: Path
    qmp_socket: Path
    control_socket: Path
    serial_socket: Path
    agent_socket: Path  # the guest agent's port (VMs with ``agent: true``)
    lock_file: Path
    start_lock: Path


class VMDataPaths(Frozen):
    """Persistent files of one VM: its directory, disks created there, logs."""

    __slots__ = ("root", "runner_log", "qemu_log", "serial_log", "cloud_init_seed",
                 "known_hosts")
    root: Path
    runner_log: Path
    qemu_log: Path
    serial_log: Path
    cloud_init_seed: Path  # the NoCloud seed maqet writes when the spec has cloud_init
    known_hosts: Path  # the guest's SSH host keys, from its console (runner.reach)


class Paths(Frozen):
    """The three roots of one installation: data, runtime, config. ``home`` is
    ``MAQET_HOME`` (None with XDG paths); ``anchor`` is where the trust checks of the
    data directory's parents stop (``MAQET_HOME``, or ``$HOME`` when the data directory
    is under it; None: its parent), see :mod:`maqet_engine.trust`."""

    __slots__ = ("data", "runtime", "config", "home", "anchor")
    data: Path
    runtime: Path
    config: Path
    home: Path | None
    anchor: Path | None

    @classmethod
    def of(cls, *, data: Path, runtime: Path, config: Path) -> Paths:
        """Paths given as roots only (the runner's, tests')."""
        return cls(data=data, runtime=runtime, config=config, home=None, anchor=None)

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
            cloud_init_seed=root / C.CLOUD_INIT_SEED_FILE,
            known_hosts=root / C.KNOWN_HOSTS_FILE,
        )

    def vm_runtime(self, vm_id: int) -> VMRuntimePaths:
        root = self.runtime / str(vm_id)
        locks = self.data / C.LOCKS_DIR
        return VMRuntimePaths(
            root=root,
            qmp_socket=root / C.QMP_SOCKET,
            control_socket=root / C.CONTROL_SOCKET,
            serial_socket=root / C.SERIAL_SOCKET,
            agent_socket=root / C.AGENT_SOCKET,
            lock_file=locks / f"{vm_id}.{C.LOCK_FILE}",
            start_lock=locks / f"{vm_id}.{C.START_LOCK_FILE}",
        )

    def ensure_runtime(self, vm_id: int) -> VMRuntimePaths:
        """Create (or check) the runtime root and the VM's runtime dir: private
        directories of the caller, mode 0700, never through a symlink.

        :raise UnsafePath: one exists but is a symlink, not a directory, owned by
            another user or writable by group or others.
        """
        rt = self.vm_runtime(vm_id)
        parent = self.runtime.parent
        if not parent.is_dir():  # MAQET_HOME/run, XDG_RUNTIME_DIR/maqet: the caller's
            parent.mkdir(mode=C.RUNTIME_DIR_MODE, parents=True, exist_ok=True)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        if str(parent) in (C.ROOT_RUNTIME_BASE, C.USER_RUNTIME_BASE):
            flags |= os.O_NOFOLLOW  # a shared base is a real directory, never a link
        parent_fd = os.open(parent, flags)
        try:
            root_fd = private_dir_at(parent_fd, self.runtime)
            try:
                os.close(private_dir_at(root_fd, rt.root))
            finally:
                os.close(root_fd)
        finally:
            os.close(parent_fd)
        rt.lock_file.parent.mkdir(mode=C.PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        return rt


def private_dir_at(parent_fd: int, path: Path) -> int:
    """Create ``path.name`` in the directory ``parent_fd`` (mode 0700) unless it exists,
    and return an fd of it after checking what was opened: a real directory (a symlink
    is never followed), owned by the caller, writable by no one else. A directory of
    ours that is merely readable by others is made 0700.

    :raise UnsafePath: it fails a check (``path`` is only used for the message).
    """
    name = path.name
    try:
        os.mkdir(name, C.RUNTIME_DIR_MODE, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent_fd)
    except OSError as err:  # ELOOP: a symlink; ENOTDIR: a file
        what = "a symlink" if os.path.islink(path) else "not a directory"
        raise _unsafe_runtime(path, what) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):  # pragma: no cover - O_DIRECTORY guarantees it
            raise _unsafe_runtime(path, "not a directory")
        if st.st_uid != os.geteuid():
            raise _unsafe_runtime(path, f"owned by uid {st.st_uid}, not by you "
                                  f"(uid {os.geteuid()})")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _unsafe_runtime(path, f"writable by group or others (mode "
                                  f"{stat.S_IMODE(st.st_mode):04o})")
        if stat.S_IMODE(st.st_mode) != C.RUNTIME_DIR_MODE:
            os.fchmod(fd, C.RUNTIME_DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unsafe_runtime(path: Path, why: str) -> Exception:
    from maqet_engine.errors import UnsafePath

    return UnsafePath(f"runtime directory {path} is {why}; maqet will not use it",
                      hint="remove it if nobody should have made it (another local user "
                      "may have), or set XDG_RUNTIME_DIR or MAQET_HOME to a directory "
                      "of your own")


def _fits(runtime: Path) -> bool:
    return len(os.fsencode(runtime)) + 1 + _ID_WIDTH + 1 + _LONGEST_RUNTIME_NAME <= C.UNIX_PATH_MAX


def _shared_base() -> Path:
    """Where runtime roots go without XDG_RUNTIME_DIR: ``/run`` for root (no other user
    can create names there), ``/tmp`` for anyone else."""
    return Path(C.ROOT_RUNTIME_BASE if os.geteuid() == 0 else C.USER_RUNTIME_BASE)


def _short_runtime(anchor: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(os.fsencode(anchor)).hexdigest()[:12]
    return _shared_base() / f"{C.APP_NAME}-{os.getuid()}-{digest}"


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
        trust_anchor: Path | None = home
        maqet_home: Path | None = home
    else:
        user_home = Path(env.get("HOME") or Path.home())
        data = Path(env.get("XDG_DATA_HOME") or user_home / ".local" / "share") / C.APP_NAME
        config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config") / C.APP_NAME
        xdg_runtime = env.get("XDG_RUNTIME_DIR")
        if xdg_runtime:
            runtime = Path(xdg_runtime) / C.APP_NAME
        elif os.geteuid() == 0:
            runtime = Path(C.ROOT_RUNTIME_BASE) / C.APP_NAME
        else:
            runtime = Path(C.USER_RUNTIME_BASE) / f"{C.APP_NAME}-{os.getuid()}"
        anchor = data
        maqet_home = None
        trust_anchor = user_home.absolute() if user_home.absolute() in data.parents else None
    if not _fits(runtime):
        runtime = _short_runtime(anchor)
    return Paths(data=data, runtime=runtime, config=config, home=maqet_home,
                 anchor=trust_anchor)
