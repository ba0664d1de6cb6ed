"""A real HTTP(S) server on 127.0.0.1 for the image cache tests: serves a directory,
counts and records what it is asked, and misbehaves on purpose (see :class:`ImageServer`).
In tests/support: the image tests, the Ansible tests and bench/bench_guests.py import it,
with the qcow2 images they serve and the proxy variables they clear."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

GATE_TIMEOUT_S = 30.0  # a gated response never waits longer than this for its release


# urllib (maqet's downloads) honours these; tests talk to 127.0.0.1 only.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                   "ALL_PROXY", "no_proxy", "NO_PROXY")


def qcow2_image(directory: Path, mark: bytes, size: int, *, random_bytes: int = 0,
                name: str = "src", timeout: float = 60) -> bytes:
    """A qcow2 image of virtual size ``size`` whose first bytes are ``mark``, then
    ``random_bytes`` random bytes (so the file is that big); made with qemu-img in
    ``directory`` (``NAME.raw`` first, removed)."""
    raw, qcow2 = directory / f"{name}.raw", directory / f"{name}.qcow2"
    with raw.open("wb") as out:
        out.write(mark)
        if random_bytes:
            out.write(os.urandom(random_bytes))
        out.truncate(size)
    subprocess.run([shutil.which("qemu-img") or "qemu-img", "convert", "-q", "-f", "raw",
                    "-O", "qcow2", str(raw), str(qcow2)], check=True, timeout=timeout)
    raw.unlink()
    return qcow2.read_bytes()


class ImageServer:
    """What the handler serves and records. Paths are ``/<mode>/<name>`` for a file
    ``name`` in ``root``; modes:

    - ``files``: the file, with Content-Length;
    - ``nolength``: the file without Content-Length (the end is the connection's);
    - ``redirect``: 302 to ``/files/<name>``;
    - ``flaky``: the first request gets half the body, then the connection is cut;
      later ones get all of it;
    - ``gate``: half the body, then waits for :attr:`release` before the rest (sets
      :attr:`started` when such a request arrives);
    - ``status``: answers with the status code ``name``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.scheme = "http"
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.cut: set[str] = set()
        self.started = threading.Event()
        self.release = threading.Event()

    def url(self, name: str, mode: str = "files") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{mode}/{name}"

    def add(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; returns its sha256."""
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def count(self, path_end: str = "") -> int:
        with self.lock:
            return sum(1 for p in self.requests if p.endswith(path_end))


class Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(self.path)
            state.headers.append(dict(self.headers.items()))
        _, mode, name = self.path.split("/", 2)
        if mode == "status":
            self.send_error(int(name))
            return
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", f"/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            data = (state.root / name).read_bytes()
        except FileNotFoundError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        half = len(data) // 2
        with state.lock:
            cut = mode == "flaky" and name not in state.cut
            state.cut.add(name)
        if cut:
            self.wfile.write(data[:half])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "gate":
            self.wfile.write(data[:half])
            self.wfile.flush()
            state.started.set()
            state.release.wait(GATE_TIMEOUT_S)
            self.wfile.write(data[half:])
            return
        self.wfile.write(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    state: ImageServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gives up mid-body (disk full, refused content) resets the
        connection: expected here, so not printed."""


@contextlib.contextmanager
def serve(root: Path, wrap: Callable[[socket.socket], socket.socket] | None = None,
          ) -> Iterator[ImageServer]:
    state = ImageServer(root)
    server = _Server(("127.0.0.1", 0), Handler)
    server.state = state
    state.port = server.server_address[1]
    if wrap is not None:
        server.socket = wrap(server.socket)
        state.scheme = "https"
    # the poll interval only bounds how long shutdown() takes (its default is 0.5 s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="image-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


