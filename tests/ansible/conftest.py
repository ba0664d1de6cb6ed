"""Fixtures of the Ansible end-to-end tests (helpers live in ansible_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_helpers import AnsibleSandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[AnsibleSandbox]:
    """A MAQET_HOME and Ansible environment of this test; every VM the test started is
    stopped and removed at teardown (through the engine, then by PID)."""
    box = AnsibleSandbox(tmp_path)
    yield box
    killed = box.cleanup()
    assert not box.our_pids(), "VM processes survived the cleanup"
    assert not killed, f"had to SIGKILL leftover VM processes: {killed}"


@pytest.fixture(scope="session")
def guest_ready() -> None:
    """The tiny test guest is built (cached); tests/conftest.py fails qemu tests when
    QEMU is missing."""
    import guest

    guest.ensure_guest()
