"""Fixtures of the image cache tests: the HTTP server of :mod:`image_server`, a port
nobody listens on, and small tmpfs mounts (disk full, read-only)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from image_server import PROXY_VARIABLES, ImageServer, serve  # tests/support


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; the tests talk to 127.0.0.1 only."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ImageServer]:
    """A threaded HTTP server on an ephemeral 127.0.0.1 port serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as state:
        yield state


@pytest.fixture
def closed_port() -> int:
    """A port that was just bound on 127.0.0.1 and closed: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tmpfs(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str, str], Path]:
    """``tmpfs(name, options)`` mounts a tmpfs at ``tmp_path/name`` (unmounted at
    teardown). Needs root."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def unmount_all() -> None:
        for point in reversed(mounted):
            subprocess.run(["umount", str(point)], check=True)

    request.addfinalizer(unmount_all)

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                       check=True)
        mounted.append(point)
        return point

    return mount
