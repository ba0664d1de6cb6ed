"""The tiny real test guest: build/cache it, and talk to its serial console.

Import as a plain module (``tests/conftest.py`` puts ``tests/guest`` on ``sys.path``)::

    import guest

    files = guest.ensure_guest()              # GuestFiles(kernel=..., initrd=...)
    with guest.RawQemu(tmp_path) as qemus:    # kills every QEMU it started, by PID
        vm = qemus.start(files.kernel, files.initrd, guest.GUEST_APPEND)
        vm.wait_for(guest.GUEST_MARKER, timeout=60)
        assert vm.powerdown(timeout=30) == 0

The same by hand, when a test needs its own command line::

    listener = guest.listen_unix(sock_path)   # bound before QEMU starts: no race
    argv = [..., "-kernel", str(files.kernel), "-initrd", str(files.initrd),
            "-append", guest.GUEST_APPEND, "-accel", guest.test_accel(),
            "-chardev", f"socket,id=s0,fd={listener.fileno()},server=on,wait=off",
            "-serial", "chardev:s0", ...]
    qemu = subprocess.Popen(argv, pass_fds=(listener.fileno(),))
    listener.close()                           # QEMU holds it now
    with guest.SerialConsole(sock_path) as console:
        console.wait_for(guest.GUEST_MARKER, timeout=60)
        console.send("echo hello-$((6*7))\\n")
        console.wait_for("hello-42", timeout=10)

Two bigger guests that Ansible can reach over SSH (see README.md)::

    keys = guest.make_ssh_keypair(tmp_path)                  # throwaway ed25519 pair
    files = guest.ensure_ssh_guest()                          # busybox+dropbear+python3+qemu-ga
    append = guest.ssh_guest_append(keys.public_line)         # key on the kernel command line
    ... boot, console.wait_for(guest.SSH_GUEST_MARKER) ...
    host_keys = guest.host_keys_from_console(console.text)    # cloud-init's KEYS block
    image = guest.ensure_cloud_image()                        # Debian 12 + real cloud-init
    seed = guest.make_nocloud_seed(tmp_path / "seed.iso", user_data=..., meta_data=...)

See ``tests/guest/README.md`` for what the guests contain and why tests use TCG.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from maqet_engine.paths import Paths

__all__ = [
    "BUILD_SCRIPT",
    "CLOUD_APPEND",
    "CLOUD_BUILD_SCRIPT",
    "CLOUD_NO_SEED_APPEND",
    "GUEST_APPEND",
    "GUEST_KEYBOARD_PROMPT",
    "GUEST_MARKER",
    "GUEST_PROMPT",
    "HOST_KEYS_BEGIN",
    "HOST_KEYS_END",
    "QGA_PORT_NAME",
    "SSH_BUILD_SCRIPT",
    "SSH_GUEST_ADDRESS",
    "SSH_GUEST_APPEND",
    "SSH_GUEST_MARKER",
    "SSH_GUEST_PROMPT",
    "SSH_KEY_PARAM",
    "QEMU",
    "CloudImage",
    "GuestAgent",
    "GuestAgentError",
    "GuestFiles",
    "RawGuest",
    "RawQemu",
    "SSHKeyPair",
    "SerialConsole",
    "SerialTimeout",
    "agent_guest_definition",
    "cache_root",
    "console_host_keys",
    "ensure_cloud_image",
    "ensure_guest",
    "ensure_ssh_guest",
    "forwarded_port",
    "guest_definition",
    "host_keys_from_console",
    "known_hosts_line",
    "listen_unix",
    "make_nocloud_seed",
    "make_ssh_keypair",
    "program",
    "qga_args",
    "qmp_command",
    "raw_qemu_argv",
    "ssh_options",
    "ssh_forward_args",
    "ssh_guest_append",
    "test_accel",
    "virtio_disk_args",
    "write_known_hosts",
]

GUEST_MARKER = "MAQET-GUEST-READY"
"""Printed once on the serial console by /init when the shell and acpid are ready."""

GUEST_PROMPT = "maqet-guest# "
"""The busybox shell's prompt on the serial console (it follows the marker)."""

GUEST_KEYBOARD_PROMPT = "maqet-tty1# "
"""Prompt of the second shell, which reads tty1 (the keyboard: QMP ``send-key``) and writes
to the serial console. /init holds tty1 open before the marker, so keys sent after the
marker are queued for it, never lost."""

GUEST_APPEND = "console=ttyS0 panic=-1 quiet cryptomgr.notests"
"""Kernel command line for the guest (serial console, no reboot loop on panic, fast boot)."""

BUILD_SCRIPT = Path(__file__).resolve().with_name("build-guest.sh")

_BUILD_TIMEOUT = 900.0  # seconds; a cold build is ~5 s plus a ~28 MB download

# --- the ssh guest (build-ssh-guest.sh) ---------------------------------------------------

SSH_GUEST_MARKER = "MAQET-GUEST-SSH-READY"
"""Printed once on the serial console by the ssh guest's /init, after dropbear listens on
port 22, qemu-ga was started (when its port exists) and the host key block was printed."""

SSH_GUEST_PROMPT = "maqet-ssh# "
"""The ssh guest's busybox shell prompt on the serial console (after the marker)."""

SSH_GUEST_APPEND = GUEST_APPEND
"""Kernel command line of the ssh guest without a key; see :func:`ssh_guest_append`."""

SSH_KEY_PARAM = "maqet.ssh_key"
"""Kernel parameter the ssh guest reads root's authorized keys from: base64 of one or more
authorized_keys lines. May be repeated. A NoCloud seed can supply keys too (or instead)."""

SSH_GUEST_ADDRESS = "10.0.2.15"
"""The guest's static address on QEMU user networking (gateway 10.0.2.2)."""

QGA_PORT_NAME = "org.qemu.guest_agent.0"
"""virtserialport name on which both test guests run qemu-ga."""

HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"
"""cloud-init's markers around the host public keys it prints on the console
(``cc_keys_to_console`` running ``write-ssh-key-fingerprints``); the ssh guest prints the
same block."""

SSH_BUILD_SCRIPT = Path(__file__).resolve().with_name("build-ssh-guest.sh")
CLOUD_BUILD_SCRIPT = Path(__file__).resolve().with_name("build-cloud-image.sh")
_LIB_SCRIPT = Path(__file__).resolve().with_name("lib-guest.sh")

# --- the cloud image (build-cloud-image.sh) -----------------------------------------------

CLOUD_APPEND = "console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests"
"""Kernel command line for the cloud image: its small initramfs mounts ``root=`` and
switch_roots to systemd; cloud-init runs (it wants a NoCloud seed)."""

CLOUD_NO_SEED_APPEND = CLOUD_APPEND + " cloud-init=disabled"
"""For booting the cloud image without a seed: cloud-init would otherwise still run its
``None`` datasource (+13 s under TCG)."""


@dataclass(frozen=True)
class GuestFiles:
    """Boot files of a complete, cached guest build."""

    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class CloudImage:
    """The cloud image: Debian 12 with systemd, OpenSSH, python3, qemu-ga and cloud-init.

    ``image`` is read-only in the cache: boot a qcow2 overlay on it
    (``qemu-img create -f qcow2 -b IMAGE -F FORMAT vm.qcow2``), never the file itself.
    """

    kernel: Path
    initrd: Path
    image: Path
    format: str


def cache_root() -> Path:
    """Where the build scripts keep their builds (``$MAQET_GUEST_CACHE`` overrides)."""
    override = os.environ.get("MAQET_GUEST_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "maqet-test-guest"


def _recipe_hash(*scripts: Path) -> str:
    """sha256 of the concatenated scripts (the build scripts stamp ``recipe`` the same way)."""
    digest = hashlib.sha256()
    for script in scripts:
        digest.update(script.read_bytes())
    return digest.hexdigest()


def _complete_files(directory: Path, names: tuple[str, ...],
                    scripts: tuple[Path, ...]) -> list[Path] | None:
    """``directory/name`` for each name if all are non-empty and ``recipe`` matches."""
    paths = [directory / name for name in names]
    try:
        if any(path.stat().st_size == 0 for path in paths):
            return None
        if (directory / "recipe").read_text().strip() != _recipe_hash(*scripts):
            return None
    except OSError:
        return None
    return paths


def _run_build(script: Path, timeout: float) -> Path:
    """Run a build script; its last stdout line is the output directory.

    The script runs in its own process group: on timeout the whole group (apt, mmdebstrap,
    ...) gets SIGTERM, which also lets the script's trap unmount and delete its work tree.
    """
    env = dict(os.environ, MAQET_GUEST_CACHE=str(cache_root()))
    proc = subprocess.Popen(
        ["bash", str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise RuntimeError(f"{script} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed with exit code {proc.returncode}:\n{stderr[-4000:]}")
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{script} printed no output directory; stderr:\n{stderr[-2000:]}")
    return Path(lines[-1])


def _ensure(script: Path, subdir: str, names: tuple[str, ...], timeout: float) -> list[Path]:
    """``cache/subdir/current/name`` for each of ``names`` when that build is complete and
    made by the current recipe (``script`` + lib-guest.sh); otherwise run ``script`` (it
    serializes concurrent callers with a lock and publishes atomically) and return its
    output directory's files."""
    scripts = (script, _LIB_SCRIPT)
    found = _complete_files((cache_root() / subdir / "current").resolve(), names, scripts)
    if found is None:
        found = _complete_files(_run_build(script, timeout), names, scripts)
    if found is None:
        raise RuntimeError(f"{script} succeeded but left no complete build")
    return found


def ensure_guest() -> GuestFiles:
    """Return the cached guest, building it first when the cache is missing or stale.

    A complete cache (``<cache>/current`` built by the current build-guest.sh and
    lib-guest.sh) is used without running anything.
    """
    kernel, initrd = _ensure(BUILD_SCRIPT, "", ("vmlinuz", "initrd.gz"), _BUILD_TIMEOUT)
    return GuestFiles(kernel=kernel, initrd=initrd)


_SSH_BUILD_TIMEOUT = 900.0  # seconds; a cold build is ~10 s plus a ~47 MB download
_CLOUD_BUILD_TIMEOUT = 1800.0  # seconds; ~45 s here, mmdebstrap downloads ~200 packages


def ensure_ssh_guest() -> GuestFiles:
    """The ssh guest (``build-ssh-guest.sh``), built first when the cache is missing or stale.

    Same kernel as :func:`ensure_guest`; the initramfs adds dropbear, sftp-server, python3.11
    and qemu-ga. Boot it with :func:`ssh_guest_append` and ``-m 256``.
    """
    kernel, initrd = _ensure(SSH_BUILD_SCRIPT, "ssh", ("vmlinuz", "initrd.gz"),
                             _SSH_BUILD_TIMEOUT)
    return GuestFiles(kernel=kernel, initrd=initrd)


def ensure_cloud_image() -> CloudImage:
    """The cloud image (``build-cloud-image.sh``), built first when missing or stale.

    Building needs root (mmdebstrap) and network access to the Debian archive. Boot with
    :data:`CLOUD_APPEND`, a qcow2 overlay on ``image`` and a NoCloud seed
    (:func:`make_nocloud_seed`).
    """
    kernel, initrd, image = _ensure(CLOUD_BUILD_SCRIPT, "cloud",
                                    ("vmlinuz", "initrd.gz", "disk.qcow2"), _CLOUD_BUILD_TIMEOUT)
    return CloudImage(kernel=kernel, initrd=initrd, image=image, format="qcow2")


def ssh_guest_append(*public_keys: str, base: str = SSH_GUEST_APPEND) -> str:
    """Kernel command line that makes the ssh guest accept ``public_keys`` for root.

    Each key is an authorized_keys line (``ssh-ed25519 AAAA... comment``); they travel as one
    ``maqet.ssh_key=`` parameter holding base64 of the lines (the command line is limited to
    2048 bytes: a few ed25519 keys fit, RSA keys take ~750 bytes each).
    """
    if not public_keys:
        return base
    lines = "".join(key.strip() + "\n" for key in public_keys)
    return f"{base} {SSH_KEY_PARAM}={base64.b64encode(lines.encode()).decode()}"


def test_accel() -> str:
    """Accelerator for test guests: TCG unless ``MAQET_TEST_ACCEL`` says otherwise.

    These CI machines are nested VMs where a Linux guest under KVM hangs (see README.md).
    """
    return os.environ.get("MAQET_TEST_ACCEL", "tcg")


test_accel.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported

# CSI sequences (ash sends ESC[6n before each prompt), other two-byte escapes, and carriage
# returns (the UART sends CRLF).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|\r")
# An escape sequence cut off at the end of a chunk: held back until the rest arrives.
_PARTIAL_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*)?\Z")


class SerialTimeout(TimeoutError):
    """``SerialConsole.wait_for`` did not see its pattern in time (or the console closed)."""


class _Closing:
    """``with obj:`` closes ``obj`` when the block ends (the subclass defines ``close``)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def listen_unix(path: str | os.PathLike[str], backlog: int = 1) -> socket.socket:
    """A listening Unix socket at ``path`` (replacing a stale file), for QEMU to inherit.

    Pass its ``fileno()`` to QEMU (``-chardev socket,id=ID,fd=N,server=on,wait=off`` with
    ``subprocess.Popen(..., pass_fds=(N,))``), then close this copy: QEMU accepts on it for
    as long as it lives, and the path exists before QEMU starts, so nobody has to wait or
    retry for QEMU to create it (the maqet runner does the same for QMP).
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class SerialConsole(_Closing):
    """A QEMU serial chardev (``-chardev socket,fd=N,server=on,wait=off``) for tests.

    A background thread reads the socket continuously for as long as the object is open, so
    QEMU's UART never stalls on a full socket buffer (a guest whose console is not drained
    slows down and even powers off late). Received text is kept with escape sequences and
    ``\\r`` removed. ``wait_for`` blocks on a condition variable that the reader notifies; it
    consumes the buffer up to the end of each match, so consecutive waits see new output only.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Connect to the chardev socket at ``path``, which must already listen.

        Bind it yourself before QEMU starts and hand QEMU the fd (:func:`listen_unix`,
        ``-chardev socket,id=s0,fd=N,server=on,wait=off`` and ``pass_fds``): then the
        socket exists before QEMU runs and connecting cannot race QEMU's startup. A
        connection made before QEMU accepts waits in the listen backlog.
        """
        self.path = os.fspath(path)
        self._sock = self._connect()
        self._cond = threading.Condition()
        self._text = ""
        self._pending = ""  # incomplete escape sequence at the end of the last chunk
        self._cursor = 0
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._reader = threading.Thread(
            target=self._read_forever, name=f"serial-{self.path}", daemon=True
        )
        self._reader.start()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ConnectionError(
                f"nothing listens on {self.path}: bind it before starting QEMU and pass the fd "
                "(guest.listen_unix + -chardev socket,fd=N,server=on,wait=off + pass_fds)"
            ) from exc
        return sock

    def _read_forever(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    return
                chunk = self._pending + self._decoder.decode(data)
                partial = _PARTIAL_ESCAPE.search(chunk)
                if partial is not None:
                    self._pending = chunk[partial.start() :]
                    chunk = chunk[: partial.start()]
                else:
                    self._pending = ""
                with self._cond:
                    self._text += _ESCAPES.sub("", chunk)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    @property
    def text(self) -> str:
        """Everything received so far (escape sequences and ``\\r`` removed)."""
        with self._cond:
            return self._text

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Block until ``pattern`` appears in output not yet consumed by an earlier wait.

        A ``str`` is matched literally, a compiled pattern as a regex. Returns the output from
        the previous match's end through the end of this match. Raises ``SerialTimeout``, with
        the tail of the output, when ``timeout`` passes or the console closes first.

        Output arrives byte by byte: end a regex with a delimiter (``\\n``), or
        ``r"hello-\\d+"`` may match ``hello-4`` before the ``2`` of ``hello-42`` is in.
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = regex.search(self._text, self._cursor)
            if match is not None:
                found.append(match)
                return True
            return self._eof

        with self._cond:
            self._cond.wait_for(seen, timeout)
            if found:
                start, self._cursor = self._cursor, found[0].end()
                return self._text[start : self._cursor]
            tail = self._text[-2000:]
            why = "the serial console closed" if self._eof else f"{timeout:.1f} s passed"
        raise SerialTimeout(
            f"{regex.pattern!r} not seen on {self.path}: {why}; last output:\n{tail}"
        )

    def send(self, text: str) -> None:
        """Type ``text`` into the guest's console (include ``\\n`` to submit a line)."""
        self._sock.sendall(text.encode())

    def close(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._sock.close()


# --- a test guest under plain QEMU (no maqet code) ----------------------------------------

QEMU = "qemu-system-x86_64"


def program(name: str) -> str:
    """The path of program ``name``; a missing one is an error, never a skip."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install it (bash scripts/setup.sh does)")
    return path


def raw_qemu_argv(kernel: str | os.PathLike[str], initrd: str | os.PathLike[str], append: str,
                  *, qmp_fd: int, serial_fd: int, memory: int = 256) -> list[str]:
    """QEMU's command line for a test guest booted from ``kernel`` and ``initrd``: q35 under
    :func:`test_accel`, ``memory`` MiB, no default devices, no display, no reboot (a reboot
    or a panic ends QEMU), QMP and the serial port on the inherited listening sockets
    ``qmp_fd`` and ``serial_fd`` (:func:`listen_unix`). Add devices after it."""
    return [
        program(QEMU),
        "-machine", "q35",
        "-accel", test_accel(),
        "-m", str(memory),
        "-nodefaults",
        "-display", "none",
        "-kernel", os.fspath(kernel),
        "-initrd", os.fspath(initrd),
        "-append", append,
        "-no-reboot",
        "-chardev", f"socket,id=qmp0,fd={qmp_fd},server=on,wait=off",
        "-mon", "chardev=qmp0,mode=control",
        "-chardev", f"socket,id=s0,fd={serial_fd},server=on,wait=off",
        "-serial", "chardev:s0",
    ]  # fmt: skip


def virtio_disk_args(path: str | os.PathLike[str], node: str, *, fmt: str = "qcow2",
                     read_only: bool = False) -> list[str]:
    """A virtio disk (the guests' kernel has no AHCI: a NoCloud seed must be one too); disks
    are /dev/vda, /dev/vdb, ... in the order given."""
    options = ",read-only=on" if read_only else ""
    return [
        "-blockdev", f"driver={fmt},node-name={node}{options},file.driver=file,"
                     f"file.filename={os.fspath(path)}",
        "-device", f"virtio-blk-pci,drive={node}",
    ]  # fmt: skip


def ssh_forward_args() -> list[str]:
    """User networking that forwards a free host port to the guest's port 22. Host port 0:
    slirp binds a free port itself (read it back with :meth:`RawGuest.forwarded_port`), so no
    other process can take it between choosing and binding. restrict=on: the guest reaches
    nothing outside; forwarded connections still come in."""
    return [
        "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


def qga_args(chardev: str) -> list[str]:
    """The virtio serial port named :data:`QGA_PORT_NAME` on ``chardev``, for qemu-ga (start
    the guest with ``chardevs=(chardev,)``, connect :class:`GuestAgent` to its socket)."""
    return [
        "-device", "virtio-serial-pci",
        "-device", f"virtserialport,chardev={chardev},name={QGA_PORT_NAME}",
    ]  # fmt: skip


@dataclass
class RawGuest:
    """A QEMU that :meth:`RawQemu.start` started: its serial console (drained from the
    start), its QMP socket, the socket of each extra chardev by id, and QEMU's own output."""

    proc: subprocess.Popen[bytes]
    console: SerialConsole
    qmp_socket: Path
    sockets: dict[str, Path]
    log: Path
    started: float  # time.monotonic() right before QEMU was started

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float) -> str:
        """:meth:`SerialConsole.wait_for`; when ``timeout`` passes (or the console closes
        first) the test fails with the console's tail and QEMU's own output."""
        try:
            return self.console.wait_for(pattern, timeout)
        except SerialTimeout as exc:
            raise AssertionError(
                f"{exc}\nQEMU log:\n{self.log.read_text(errors='replace')}") from exc

    def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
            hangup_ok: bool = False, timeout: float = 10.0) -> Any:
        """One QMP command (:func:`qmp_command`)."""
        return qmp_command(self.qmp_socket, command, arguments, hangup_ok=hangup_ok,
                           timeout=timeout)

    def forwarded_port(self, guest_port: int = 22) -> int:
        """The host port slirp bound for ``guest_port`` (:func:`ssh_forward_args`)."""
        usernet = self.qmp("human-monitor-command", {"command-line": "info usernet"})
        return forwarded_port(usernet, guest_port)

    def powerdown(self, timeout: float) -> int:
        """ACPI powerdown, then wait at most ``timeout`` seconds for QEMU to exit
        (``subprocess.TimeoutExpired`` otherwise); returns its exit code."""
        self.qmp("system_powerdown", hangup_ok=True)
        return self.proc.wait(timeout=timeout)


class RawQemu(_Closing):
    """Starts test guests under plain QEMU (no maqet code) and owns them: :meth:`close`
    kills every QEMU it started by PID, reaps it, closes its console and deletes the sockets.

    Every socket is bound and listening before QEMU starts, and QEMU inherits it: connecting
    can never race QEMU's startup (no retries, no sleeps). The console connects before QEMU
    runs; the connection waits in the backlog until QEMU's main loop accepts it, long before
    the guest prints anything. AF_UNIX paths are limited to 108 bytes and pytest's tmp_path
    is long: the sockets go to a directory under /tmp, QEMU's output to ``log_dir``.
    """

    def __init__(self, log_dir: str | os.PathLike[str], prefix: str = "maqet-qemu-") -> None:
        self.log_dir = Path(log_dir)
        self.sockdir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.guests: list[RawGuest] = []

    def start(self, kernel: str | os.PathLike[str], initrd: str | os.PathLike[str],
              append: str, *, memory: int = 256, chardevs: tuple[str, ...] = (),
              args: list[str] | None = None) -> RawGuest:
        """Start QEMU with :func:`raw_qemu_argv`, a listening socket chardev for each id in
        ``chardevs`` (``RawGuest.sockets[id]``), then ``args``. Returns at once: wait for
        the guest with :meth:`RawGuest.wait_for`."""
        n = len(self.guests)
        names = ("qmp", "serial", *chardevs)
        paths = {name: self.sockdir / f"{name}{n}.sock" for name in names}
        log = self.log_dir / f"qemu{n}.log"
        listeners: list[socket.socket] = []
        try:
            for name in names:
                listeners.append(listen_unix(paths[name]))
            fds = dict(zip(names, (sock.fileno() for sock in listeners), strict=True))
            argv = raw_qemu_argv(kernel, initrd, append, qmp_fd=fds["qmp"],
                                 serial_fd=fds["serial"], memory=memory)
            for chardev in chardevs:
                argv += ["-chardev", f"socket,id={chardev},fd={fds[chardev]},server=on,wait=off"]
            argv += args or []
            console = SerialConsole(paths["serial"])
            try:
                with log.open("wb") as out:
                    started = time.monotonic()
                    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=out, pass_fds=tuple(fds.values()))
            except BaseException:
                console.close()
                raise
        finally:
            for sock in listeners:
                sock.close()  # QEMU holds its own copies; its exit closes the sockets
        vm = RawGuest(proc, console, paths["qmp"],
                      {chardev: paths[chardev] for chardev in chardevs}, log, started)
        self.guests.append(vm)
        return vm

    def close(self) -> None:
        """Kill (SIGKILL, by PID) and reap every QEMU still running, close the consoles,
        delete the sockets. Idempotent."""
        stuck: list[subprocess.TimeoutExpired] = []
        while self.guests:
            vm = self.guests.pop()
            if vm.proc.poll() is None:
                vm.proc.kill()
            try:
                vm.proc.wait(timeout=30)
            except subprocess.TimeoutExpired as exc:  # unkillable (D state): say so, go on
                stuck.append(exc)
            vm.console.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        if stuck:
            raise stuck[0]


def write_known_hosts(path: str | os.PathLike[str], host_keys: list[str], port: int,
                      host: str = "127.0.0.1") -> Path:
    """A known_hosts file at ``path`` holding ``host_keys`` for ``host``:``port``."""
    target = Path(path)
    target.write_text("".join(known_hosts_line(key, host, port) + "\n" for key in host_keys))
    return target


# --- the guest behind a maqet runner ----------------------------------------------------
BOOT_TIMEOUT = 60.0  # seconds to the marker; ~2 s under TCG here
CONSOLE_TIMEOUT = 20.0  # seconds for a shell command's output; ~0.1 s


def wait_console(paths: Paths, name: str, pattern: str, *, since: int = 0,
                 timeout: float = CONSOLE_TIMEOUT) -> tuple[str, int]:
    """Block (the runner's ``serial_wait``: woken by console output, no polling) until
    the regex ``pattern`` appears on VM ``name``'s console after offset ``since``.
    Returns the match and the offset after it. ``paths``: the installation's Paths."""
    from maqet_engine import engine

    reply = engine.wait_console(engine.EngineContext(paths=paths), name, pattern, since=since,
                                timeout=timeout).data
    return str(reply["match"]), int(reply["offset"])


def wait_marker(paths: Paths, name: str, timeout: float = BOOT_TIMEOUT) -> int:
    """Wait for the guest's ready marker in this boot; returns the console offset after it."""
    return wait_console(paths, name, GUEST_MARKER, timeout=timeout)[1]


def console_host_keys(paths: Paths, name: str, timeout: float = BOOT_TIMEOUT) -> list[str]:
    """The host keys VM ``name`` prints in this boot (cloud-init's KEYS block), read from
    the runner's copy of the console stream, line by line (``serial_wait``: no polling).

    Not from ``serial.log``: QEMU 7.2 logs a byte its serial port could not send yet
    (socket full: EAGAIN, the runner lagging under load) and logs it again when the UART
    retries, so the log may hold doubled characters ("ssh-ed255119", seen here under
    load); the stream the runner reads has each byte once.
    """
    _, offset = wait_console(paths, name, re.escape(HOST_KEYS_BEGIN), timeout=timeout)
    lines = [HOST_KEYS_BEGIN + "\n"]
    while not lines[-1].startswith(HOST_KEYS_END):
        line, offset = wait_console(paths, name, r"^[^\n]*\n", since=offset, timeout=timeout)
        lines.append(line)
    return host_keys_from_console("".join(lines))


def guest_definition(name: str, files: GuestFiles | None = None, **overrides: object,
                     ) -> dict[str, object]:
    """A maqet definition that boots this guest under TCG (256 MiB, q35, no reboot: a
    guest reboot ends QEMU). ``overrides`` replace or add keys."""
    files = files or ensure_guest()
    data: dict[str, object] = {
        "name": name, "accel": test_accel(), "memory": "256M", "machine": "q35",
        "kernel": str(files.kernel), "initrd": str(files.initrd), "append": GUEST_APPEND,
        "arguments": ["-no-reboot"]}
    data.update(overrides)
    return data


def agent_guest_definition(name: str, *, reboot: bool = False) -> dict[str, object]:
    """The ssh guest with maqet's guest agent channel (``agent: true``) and no network
    device at all. ``reboot``: a guest reboot resets the VM (no ``-no-reboot``, which
    would end QEMU)."""
    return guest_definition(name, ensure_ssh_guest(), append=SSH_GUEST_APPEND, agent=True,
                            arguments=([] if reboot else ["-no-reboot"])
                            + ["-device", "virtio-rng-pci"])  # fast host key generation


# --- SSH: host keys from the console, client keys, forwarded ports ----------------------

def host_keys_from_console(text: str) -> list[str]:
    """Host public keys (``type blob``) from the last complete cloud-init KEYS block in
    console ``text`` (``[]`` before one was printed): the engine's own parser, so the
    guests are tested against what maqet reads."""
    from maqet_engine.cloudinit import host_keys_from_console as parse

    return parse(text)


def known_hosts_line(host_key: str, host: str = "127.0.0.1", port: int = 22) -> str:
    """A known_hosts line for ``host_key`` at ``host``:``port`` (the engine's format)."""
    from maqet_engine.cloudinit import host_pattern, known_hosts_lines

    return known_hosts_lines([host_pattern(host, port)], [host_key])[0]


def forwarded_port(usernet: str, guest_port: int = 22) -> int:
    """The host port of the ``hostfwd`` rule to ``guest_port``, from HMP ``info usernet``.

    Ask QEMU for ``hostfwd=tcp:127.0.0.1:0-:22`` (port 0): slirp binds a free port itself,
    so nothing races between choosing a port and QEMU binding it; this reads which one it got.
    """
    for line in usernet.splitlines():
        fields = line.split()
        # "TCP[HOST_FORWARD]  FD  SRC-ADDR SRC-PORT  DST-ADDR DST-PORT  RECVQ SENDQ"
        if len(fields) >= 6 and fields[0] == "TCP[HOST_FORWARD]" and fields[5] == str(guest_port):
            return int(fields[3])
    raise ValueError(f"no TCP host forwarding to guest port {guest_port} in:\n{usernet}")


def ssh_options(private_key: str | os.PathLike[str],
                known_hosts: str | os.PathLike[str]) -> list[str]:
    """Options for ``ssh``/``scp``/``sftp`` against a test guest: no user or system config,
    only ``private_key`` (no agent), batch mode, and strict host key checking against
    ``known_hosts`` (build it from the console: :func:`host_keys_from_console`,
    :func:`known_hosts_line`)."""
    return [
        "-F", "/dev/null",
        "-i", os.fspath(private_key),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={os.fspath(known_hosts)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=30",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


@dataclass(frozen=True)
class SSHKeyPair:
    """A throwaway OpenSSH key pair on disk (no passphrase)."""

    private_key: Path
    public_key: Path

    @property
    def public_line(self) -> str:
        """The authorized_keys line (``ssh-ed25519 AAAA... comment``)."""
        return self.public_key.read_text().strip()


def make_ssh_keypair(directory: str | os.PathLike[str], name: str = "id_ed25519",
                     comment: str = "maqet-test") -> SSHKeyPair:
    """Create an ed25519 key pair ``directory/name`` and ``.pub`` with ``ssh-keygen``."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RuntimeError("ssh-keygen not found: install the Debian package openssh-client")
    private = Path(directory) / name
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    return SSHKeyPair(private_key=private, public_key=private.with_name(name + ".pub"))


def make_nocloud_seed(path: str | os.PathLike[str], *, user_data: str, meta_data: str,
                      network_config: str | None = None, filesystem: str = "iso9660") -> Path:
    """Write a NoCloud seed image at ``path``: ``filesystem`` ``iso9660`` (label ``cidata``,
    made with genisoimage, xorriso or mkisofs) or ``vfat`` (label ``CIDATA``, mkfs.vfat +
    mcopy). Attach it as a read-only **virtio** disk: q35's CD-ROM is AHCI, which the cloud
    kernel lacks. Returns the path."""
    target = Path(path)
    files = {"user-data": user_data, "meta-data": meta_data}
    if network_config is not None:
        files["network-config"] = network_config
    staging = target.with_name(target.name + ".d")
    staging.mkdir()
    try:
        for name, content in files.items():
            (staging / name).write_text(content)
        sources = [str(staging / name) for name in files]
        if filesystem == "iso9660":
            tool = next((t for t in ("genisoimage", "xorriso", "mkisofs") if shutil.which(t)),
                        None)
            if tool is None:
                raise RuntimeError("no genisoimage, xorriso or mkisofs: install genisoimage")
            argv = [tool] + (["-as", "mkisofs"] if tool == "xorriso" else [])
            argv += ["-quiet", "-output", str(target), "-volid", "cidata", "-joliet", "-rock",
                     *sources]
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        elif filesystem == "vfat":
            if shutil.which("mkfs.vfat") is None or shutil.which("mcopy") is None:
                raise RuntimeError("mkfs.vfat or mcopy missing: install dosfstools and mtools")
            target.unlink(missing_ok=True)
            subprocess.run(["mkfs.vfat", "-n", "CIDATA", "-C", str(target), "2048"],
                           check=True, capture_output=True, timeout=60)
            subprocess.run(["mcopy", "-i", str(target), *sources, "::"],
                           check=True, capture_output=True, timeout=60)
        else:
            raise ValueError(f"filesystem must be iso9660 or vfat, not {filesystem!r}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- qemu-guest-agent ----------------------------------------------------------------------

class GuestAgentError(RuntimeError):
    """qemu-ga answered with an error, or did not answer in time."""


class GuestAgent(_Closing):
    """A client for qemu-ga on a virtserialport chardev socket (``server=on``).

    Bind the socket before QEMU starts (:func:`listen_unix` + ``fd=N``) and connect this client
    once; QEMU queues what is written until the agent opens the port. Call :meth:`sync` before
    anything else: it repeats ``guest-sync`` until its own id comes back, discarding replies
    to earlier attempts, as the protocol requires.
    """

    _ids = itertools.count(int(time.time()) % 100000 * 1000)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.path)
        except OSError:
            self._sock.close()
            raise
        self._buffer = b""

    def _send(self, command: str, arguments: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _reply(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON object from the agent, or None when ``deadline`` passed."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                try:
                    reply = json.loads(line.strip(b"\xff \t\r").decode() or "null")
                except ValueError:
                    continue  # noise before the channel is in sync
                if isinstance(reply, dict):
                    return reply
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise GuestAgentError(f"qemu-ga channel {self.path} closed")
            self._buffer += data

    def sync(self, timeout: float = 60.0, attempt: float = 2.0) -> None:
        """Bring the channel in sync: ``guest-sync`` with a fresh id every ``attempt``
        seconds until that id comes back, for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sync_id = next(self._ids)
            self._send("guest-sync", {"id": sync_id})
            wait_until = min(deadline, time.monotonic() + attempt)
            while (reply := self._reply(wait_until)) is not None:
                if reply.get("return") == sync_id:
                    return
        raise GuestAgentError(f"qemu-ga on {self.path} did not answer guest-sync in {timeout} s")

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = 30.0) -> Any:
        """Run ``command`` and return its ``return`` value (call :meth:`sync` first)."""
        self._send(command, arguments)
        reply = self._reply(time.monotonic() + timeout)
        if reply is None:
            raise GuestAgentError(f"qemu-ga: no reply to {command} within {timeout} s")
        if "error" in reply:
            raise GuestAgentError(f"qemu-ga: {command} failed: {reply['error']}")
        return reply.get("return")

    def exec_wait(self, argv: list[str], timeout: float = 60.0) -> tuple[int, bytes, bytes]:
        """``guest-exec`` ``argv`` with captured output and wait for it by asking
        ``guest-exec-status`` (each call is a round trip to the guest, no sleeping here).
        Returns (exit code, stdout, stderr)."""
        pid = self.execute("guest-exec", {"path": argv[0], "arg": argv[1:],
                                          "capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.execute("guest-exec-status", {"pid": pid})
            if status.get("exited"):
                return (
                    int(status.get("exitcode", -1)),
                    base64.b64decode(status.get("out-data", "")),
                    base64.b64decode(status.get("err-data", "")),
                )
        raise GuestAgentError(f"qemu-ga: {argv} did not exit within {timeout} s")

    def close(self) -> None:
        self._sock.close()


# --- QMP ----------------------------------------------------------------------------------

def qmp_command(path: str | os.PathLike[str], command: str,
                arguments: dict[str, Any] | None = None, *, hangup_ok: bool = False,
                timeout: float = 10.0) -> Any:
    """Run one QMP ``command`` on a fresh connection to ``path``; every step is bounded by
    ``timeout``. With ``hangup_ok`` QEMU may close the connection before we do (after
    ``system_powerdown`` or ``quit``)."""
    import asyncio

    from qemu.qmp import QMPClient  # imported here: only tests that boot QEMU need it

    async def session() -> Any:
        client = QMPClient("maqet-test-guest")
        await asyncio.wait_for(client.connect(os.fspath(path)), timeout)
        try:
            return await asyncio.wait_for(client.execute(command, arguments), timeout)
        finally:
            with contextlib.suppress(*((EOFError, ConnectionResetError) if hangup_ok else ())):
                await asyncio.wait_for(client.disconnect(), timeout)

    return asyncio.run(session())
