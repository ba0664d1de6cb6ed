"""The maqet CLI as a test runs it: a child ``python -m maqet_engine`` in this environment
(its MAQET_HOME and XDG directories), never reading the test's stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def maqet(*args: str, timeout: float, cwd: Path | None = None,
          ) -> subprocess.CompletedProcess[str]:
    """``maqet ARGS...`` in ``cwd``, its output captured as text; ``timeout`` bounds it."""
    return subprocess.run([sys.executable, "-m", "maqet_engine", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=os.environ.copy(),
                          stdin=subprocess.DEVNULL, check=False)


def maqet_json(*args: str, timeout: float) -> Any:
    """``maqet --json ARGS...``: asserts exit status 0 (the message shows stdout and stderr)
    and returns the parsed output. ``timeout`` bounds the whole command."""
    run = maqet("--json", *args, timeout=timeout)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)
