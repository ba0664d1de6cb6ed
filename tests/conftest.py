"""Shared fixtures: every test gets its own MAQET_HOME and never touches ~/."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maqet_engine import constants as C

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "guest"))  # guest.py: the tiny test guest
sys.path.insert(0, str(REPO / "tests" / "support"))  # procs.py: processes a test caused


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see the user's real maqet state or XDG directories."""
    fake_home = tmp_path_factory.mktemp("xdg")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(var, str(fake_home / var.lower()))
    monkeypatch.delenv("MAQET_HOME", raising=False)


QEMU_TOOLS = ("qemu-system-x86_64", "qemu-img", "qemu-io")


@pytest.fixture(autouse=True)
def _qemu_is_installed(request: pytest.FixtureRequest) -> None:
    """A test marked ``qemu`` fails (never skips) when QEMU is missing: a skipped
    integration suite would hide a broken install."""
    if request.node.get_closest_marker("qemu") is None:
        return
    missing = [tool for tool in QEMU_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install the Debian packages "
                    "qemu-system-x86 and qemu-utils (bash scripts/setup.sh does)")


@pytest.fixture(scope="session", autouse=True)
def _qemu_user_exists() -> None:
    """Root's QEMU drops to the ``maqet-qemu`` user (docs/security.md) and maqet refuses
    to start one without it. scripts/setup.sh creates it; a run as root makes sure of it
    (a system user without a home, left in place: ``userdel maqet-qemu`` removes it)."""
    if os.geteuid() == 0:
        from users import ensure_user

        ensure_user(C.DEFAULT_QEMU_USER)


@pytest.fixture
def maqet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MAQET_HOME for this test (set in the environment)."""
    home = tmp_path / "home"
    monkeypatch.setenv("MAQET_HOME", str(home))
    return home


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def lab_bridge() -> Iterator[Any]:
    """A bridge of this test with a network namespace on it (tests/support/labbridge.py);
    fails (never skips) when not root. Removed at teardown."""
    import labbridge

    if os.geteuid() != 0:
        pytest.fail("bridged networks need root (tap devices, a bridge, a namespace)")
    with labbridge.lab_bridge() as lab:
        yield lab


def files_under(path: Path) -> list[Path]:
    """Every file and directory below ``path`` (empty when it does not exist)."""
    return sorted(path.rglob("*")) if path.exists() else []


os.environ.setdefault("LC_ALL", "C.UTF-8")
