"""What maqet trusts on the host: StrictModes for its own files, as OpenSSH has.

A file or directory maqet reads instructions from (its home, data directory, state
store, a VM's directory, a definition file) must be owned by the caller or by root and
be writable by no one else. Otherwise another local user could change what maqet
does: with a world-writable home they could swap the store for one whose VM
``binary`` is their script, and the next root ``maqet start`` would run it as uid 0.

Who checks: every command that changes something or runs a program
(:meth:`~maqet_engine.engine.context.EngineContext.open_store` with ``verify``, the
default); the pure reads ``ls``, ``show`` and ``status`` do not (a root ``ls`` of a
store another user controls shows what they wrote, and runs nothing). Symlinks are
followed: what counts is the file that would be used. Missing paths pass (maqet
creates them private). The runtime directory has its own, stricter checks
(:mod:`maqet_engine.paths`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import UnsafePath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from maqet_engine.paths import Paths

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def check_path(path: Path, what: str) -> None:
    """``path`` (when it exists) is owned by the caller or root and not writable by
    group or others.

    :raise UnsafePath: with the path and the command that fixes it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise UnsafePath(f"{what} {path} cannot be checked: {err.strerror}",
                         hint="check its permissions") from None
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise UnsafePath(f"{what} {path} belongs to uid {st.st_uid}, neither you (uid {me}) "
                         "nor root; another user could change what maqet does",
                         hint=f"chown {me} {path}, or use a MAQET_HOME of your own")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise UnsafePath(f"{what} {path} is writable by group or others (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); another user could change what "
                         "maqet does", hint=f"chmod go-w {path}")


def check_paths(items: Iterable[tuple[Path, str]]) -> None:
    for path, what in items:
        check_path(path, what)


def home_chain(paths: Paths) -> list[tuple[Path, str]]:
    """The data directory and its parents up to the installation's home."""
    anchor = paths.anchor if paths.anchor is not None else paths.data.parent
    chain = [(paths.data, "data directory")]
    current = paths.data
    while current != anchor and anchor in current.parents:
        current = current.parent
        chain.append((current, "maqet home" if current == anchor else "directory"))
    return chain


def check_installation(paths: Paths) -> None:
    """The home, data directory, state store (with its WAL files) and VM directory root."""
    db = paths.db
    check_paths([*reversed(home_chain(paths)), (paths.data / C.VMS_DIR, "VM directory root"),
                 (db, "state store"), (db.with_name(db.name + "-wal"), "state store journal"),
                 (db.with_name(db.name + "-shm"), "state store journal")])


def check_vm_dir(paths: Paths, name: str) -> None:
    """One VM's directory and the logs in it."""
    data = paths.vm_data(name)
    check_paths([(data.root, "VM directory"), (data.runner_log, "log"),
                 (data.qemu_log, "log"), (data.serial_log, "log")])


def check_definition_file(file: Path) -> None:
    """A definition file given to add/apply, and the directory it is in."""
    absolute = Path(os.path.abspath(file))
    check_paths([(absolute.parent, "directory of the definition file"),
                 (absolute, "definition file")])


def make_private_dirs(paths: Paths) -> None:
    """Create the home (with ``MAQET_HOME``) and the data directory, mode 0700; make an
    existing one of ours private (the store and logs in it hold secrets)."""
    for directory in (paths.home, paths.data):
        if directory is not None:
            _private(directory, C.PRIVATE_DIR_MODE, is_dir=True)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then make it 0600 if it
    is ours), never through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     C.PRIVATE_FILE_MODE)
    except FileExistsError:
        _private(path, C.PRIVATE_FILE_MODE, is_dir=False)
        return
    os.close(fd)


def open_private_log(path: Path) -> int:
    """An fd appending to the log ``path``, created 0600 (an existing log of ours is
    made 0600): console logs carry secrets once cloud-init runs."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 C.PRIVATE_FILE_MODE)
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != C.PRIVATE_FILE_MODE:
        os.fchmod(fd, C.PRIVATE_FILE_MODE)
    return fd


def _private(path: Path, mode: int, *, is_dir: bool) -> None:
    if is_dir:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return  # not ours to change: check_path says whether it may be used
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
