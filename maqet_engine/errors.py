"""The one exception hierarchy of maqet.

Every error a user can cause says what went wrong and what to do, in one line, and
carries the process exit code the CLI uses (``docs/cli.md``)::

    MaqetError                      exit 1  (a bug unless a subclass)
     +-- UsageError                 exit 2  bad command line
     |    +-- ConfigError           exit 2  bad YAML, unknown key, bad value (has .path)
     +-- NotFoundError              exit 3
     |    +-- VMNotFound            exit 3
     |    +-- SnapshotNotFound      exit 3
     |    +-- NetworkNotFound       exit 3
     +-- ConflictError              exit 4  exists with another definition, wrong state
     |    +-- AlreadyExists         exit 4
     |    +-- StateConflict         exit 4
     |         +-- NetworkInUse     exit 4  VM definitions still name the network (.vms)
     +-- RuntimeFailure             exit 5  QEMU, QMP, runner
     |    +-- QEMULaunchError       exit 5  QEMU did not start (has the tail of its log)
     |    +-- QMPCommandError       exit 5  QMP replied with an error (has .error_class)
     |    +-- RunnerUnavailable     exit 5  no runner answers for a running VM
     |    +-- OperationTimeout      exit 5  something did not finish in time
     |    +-- AgentCommandError     exit 5  the guest agent replied with an error
     |    +-- AgentUnavailable      exit 7  the guest agent does not answer (no channel,
     |                                      not running in the guest, hung)
     +-- HostError                  exit 6  missing binary, permissions, disk full
          +-- QEMUNotFound          exit 6  the QEMU binary is not installed
          +-- StateStoreError       exit 6  the SQLite store cannot be used
          +-- UnsafePath            exit 6  a file or directory another user controls
          +-- QEMUUserMissing       exit 6  root without the unprivileged QEMU user

Wrappers keep their cause (``raise ... from err``); ``asyncio.CancelledError`` is
never wrapped.
"""

from __future__ import annotations

from maqet_engine import constants as C

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


class MaqetError(Exception):
    """Root of every maqet error. ``str(err)`` is the one-line user message."""

    exit_code: ClassVar[int] = C.EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        # Set by the engine when the failing call had already changed something (a
        # definition stored before QEMU failed to start): that partial Result.
        self.result: Any = None
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """JSON shape used by ``--json`` output and IPC error replies."""
        return {"type": self.type_name, "message": str(self), "exit_code": self.exit_code}


class UsageError(MaqetError):
    exit_code = C.EXIT_USAGE


class ConfigError(UsageError):
    """A definition is invalid. ``path`` is the dotted key path (``storage[0].size``)."""

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["path"] = self.path
        return data


class NotFoundError(MaqetError):
    exit_code = C.EXIT_NOT_FOUND


class VMNotFound(NotFoundError):
    def __init__(self, name: str, *, home: str | None = None) -> None:
        self.name = name
        where = f" in {home}" if home else ""
        super().__init__(f"no VM named {name!r}{where}",
                         hint="check the name, and the maqet home (MAQET_HOME / maqet_home)")


class SnapshotNotFound(NotFoundError):
    pass


class NetworkNotFound(NotFoundError):
    def __init__(self, name: str, *, used_by: str | None = None) -> None:
        self.name = name
        where = f" ({used_by} names it)" if used_by else ""
        super().__init__(f"no network named {name!r}{where}",
                         hint="check the name (maqet network ls), or add the network first")


class ConflictError(MaqetError):
    exit_code = C.EXIT_CONFLICT


class AlreadyExists(ConflictError):
    pass


class StateConflict(ConflictError):
    pass


class NetworkInUse(StateConflict):
    """A network that VM definitions still name cannot be removed; ``vms`` names them."""

    def __init__(self, name: str, vms: list[str]) -> None:
        self.name = name
        self.vms = list(vms)
        super().__init__(f"network {name!r} is used by VM(s) {', '.join(self.vms)}",
                         hint="remove those VMs, or change their definitions to another "
                         "network, first")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["vms"] = self.vms
        return data


class RuntimeFailure(MaqetError):
    exit_code = C.EXIT_RUNTIME


class QEMULaunchError(RuntimeFailure):
    def __init__(self, message: str, *, log_tail: str = "", argv: list[str] | None = None) -> None:
        self.log_tail = log_tail
        self.argv = argv or []
        tail = " | ".join(line for line in log_tail.splitlines() if line.strip())
        super().__init__(f"{message}: {tail}" if tail else message)


class QMPCommandError(RuntimeFailure):
    """QMP answered ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"QMP {command} failed: {error_class}: {desc}")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(command=self.command, error_class=self.error_class, desc=self.desc)
        return data


class RunnerUnavailable(RuntimeFailure):
    pass


class OperationTimeout(RuntimeFailure):
    pass


class AgentCommandError(RuntimeFailure):
    """qemu-ga answered ``{"error": {"class": ..., "desc": ...}}`` (a file it cannot open,
    a command it does not have)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"guest agent: {command} failed: {desc}")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(command=self.command, error_class=self.error_class, desc=self.desc)
        return data


class AgentUnavailable(RuntimeFailure):
    """The guest agent cannot be reached within the caller's timeout: the VM has no agent
    channel, qemu-ga does not run in the guest (not installed, not started yet, stopped,
    the guest rebooting), or it does not answer. A runtime failure with its own exit code,
    so that scripts (and ``maqet exec``, which passes on the guest command's code) can
    tell it apart."""

    exit_code = C.EXIT_AGENT


class HostError(MaqetError):
    exit_code = C.EXIT_HOST


class QEMUNotFound(HostError):
    pass


class StateStoreError(HostError):
    pass


class UnsafePath(HostError):
    """A directory or file maqet would trust (its home, store, runtime directory, a
    definition file) can be changed by another user, or is a symlink where none may be."""


class QEMUUserMissing(HostError):
    """maqet runs as root and the unprivileged user QEMU should run as does not exist."""


def host_error(err: OSError, what: str, path: object, *,
               cls: type[HostError] = HostError) -> HostError:
    """The one-line error for an OSError of the host met while doing ``what`` (``"create
    the VM directory"``) on ``path``: a full disk, a read-only filesystem, missing
    permissions. Keep the cause: ``raise host_error(err, ...) from err``."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free space on that filesystem and retry"
    elif err.errno == errno.EROFS:
        hint = ("the filesystem is read-only: remount it read-write, or set MAQET_HOME to "
                "a writable directory")
    elif err.errno in (errno.EACCES, errno.EPERM):
        hint = "check the permissions there, or set MAQET_HOME to a directory you own"
    else:
        hint = "check that path and retry"
    return cls(f"cannot {what} {path}: {err.strerror or err}", hint=hint)


# Errors that may cross the IPC socket, rebuilt on the client side by type name.
_REMOTE_TYPES: dict[str, type[MaqetError]] = {
    cls.__name__: cls
    for cls in (
        MaqetError, UsageError, ConfigError, NotFoundError, SnapshotNotFound, ConflictError,
        AlreadyExists, StateConflict, RuntimeFailure, RunnerUnavailable, OperationTimeout,
        AgentUnavailable, HostError, QEMUNotFound, StateStoreError, UnsafePath, QEMUUserMissing,
    )
}


def error_from_dict(data: dict[str, Any]) -> MaqetError:
    """Rebuild an error sent as :meth:`MaqetError.to_dict` (IPC replies)."""
    type_name = str(data.get("type", "MaqetError"))
    message = str(data.get("message", "unknown error"))
    if type_name == "QMPCommandError":
        return QMPCommandError(
            str(data.get("command", "")),
            str(data.get("error_class", "GenericError")),
            str(data.get("desc", message)),
        )
    if type_name == "AgentCommandError":
        return AgentCommandError(
            str(data.get("command", "")),
            str(data.get("error_class", "GenericError")),
            str(data.get("desc", message)),
        )
    cls = _REMOTE_TYPES.get(type_name, RuntimeFailure)
    return cls(message)
