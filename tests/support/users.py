"""Real other local users for tests about trust (files and directories that another
user controls). Created idempotently as system users without a home and left in
place (``userdel maqet-test-other maqet-test-victim`` removes them); commands run as
them through ``setpriv`` with no supplementary groups.

They cannot run the project's virtualenv (it lives under /root): what they run is
the system ``/usr/bin/python3`` with this worktree on ``PYTHONPATH`` (maqet's
``paths`` module needs nothing beyond the standard library) or plain commands.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OTHER = "maqet-test-other"  # the attacker: another local user
VICTIM = "maqet-test-victim"  # an unprivileged maqet user, when root is not the victim
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, argv: list[str], *, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user (real and effective ids, no groups)."""
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
             "--", *argv],
            env=env if env is not None else {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
            capture_output=True, text=True, check=check, timeout=60, cwd="/",
        )

    def python(self, code: str, *, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` as this user with this worktree importable."""
        base = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONPATH": str(REPO),
                "HOME": "/nonexistent"}
        return self.run([SYSTEM_PYTHON, "-P", "-c", code], env={**base, **(env or {})})


def ensure_user(name: str) -> User:
    """The system user ``name``, created when missing (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("creating another local user needs root")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is None:
        result = subprocess.run(["useradd", "--system", "--no-create-home",
                                 "--shell", "/usr/sbin/nologin", name],
                                capture_output=True, text=True, check=False)
        if result.returncode not in (0, 9):  # 9: created meanwhile by a parallel run
            raise RuntimeError(f"useradd {name}: {result.stderr.strip()}")
        entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)
