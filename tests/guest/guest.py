"""The tiny real test guest: build/cache it, and talk to its serial console.

Import as a plain module (``tests/conftest.py`` puts ``tests/guest`` on ``sys.path``)::

    import guest

    files = guest.ensure_guest()              # GuestFiles(kernel=..., initrd=...)
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

See ``tests/guest/README.md`` for what the guest contains and why tests use TCG.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maqet_engine.paths import Paths

__all__ = [
    "BUILD_SCRIPT",
    "GUEST_APPEND",
    "GUEST_KEYBOARD_PROMPT",
    "GUEST_MARKER",
    "GUEST_PROMPT",
    "GuestFiles",
    "SerialConsole",
    "SerialTimeout",
    "cache_root",
    "ensure_guest",
    "guest_definition",
    "listen_unix",
    "test_accel",
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


@dataclass(frozen=True)
class GuestFiles:
    """Boot files of a complete, cached guest build."""

    kernel: Path
    initrd: Path


def cache_root() -> Path:
    """Where build-guest.sh keeps its builds (``$MAQET_GUEST_CACHE`` overrides)."""
    override = os.environ.get("MAQET_GUEST_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "maqet-test-guest"


def _recipe_hash() -> str:
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()


def _complete(directory: Path) -> GuestFiles | None:
    """The build in ``directory`` if it is complete and made by the current recipe."""
    kernel, initrd, recipe = directory / "vmlinuz", directory / "initrd.gz", directory / "recipe"
    try:
        if kernel.stat().st_size == 0 or initrd.stat().st_size == 0:
            return None
        if recipe.read_text().strip() != _recipe_hash():
            return None
    except OSError:
        return None
    return GuestFiles(kernel=kernel, initrd=initrd)


def ensure_guest() -> GuestFiles:
    """Return the cached guest, building it first when the cache is missing or stale.

    A complete cache (``<cache>/current`` built by the current build-guest.sh) is used without
    running anything. Otherwise the build script runs (it serializes concurrent callers with a
    lock and publishes atomically); its last stdout line is the output directory.
    """
    found = _complete((cache_root() / "current").resolve())
    if found is not None:
        return found
    env = dict(os.environ, MAQET_GUEST_CACHE=str(cache_root()))
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{BUILD_SCRIPT} did not finish within {_BUILD_TIMEOUT:.0f} s") from exc
    if result.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT} failed with exit code {result.returncode}:\n{result.stderr[-4000:]}"
        )
    lines = result.stdout.strip().splitlines()
    built = _complete(Path(lines[-1])) if lines else None
    if built is None:
        raise RuntimeError(
            f"{BUILD_SCRIPT} succeeded but left no complete build "
            f"(stdout: {result.stdout[-500:]!r}; stderr: {result.stderr[-2000:]})"
        )
    return built


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


class SerialConsole:
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

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
