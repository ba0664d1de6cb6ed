"""The maqet CLI as a test runs it: a child ``python -m maqet_engine`` in this environment
(its MAQET_HOME and XDG directories), never reading the test's stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def maqet_json(*args: str, timeout: float) -> Any:
    """``maqet --json ARGS...``: asserts exit status 0 (the message shows stdout and stderr)
    and returns the parsed output. ``timeout`` bounds the whole command."""
    run = subprocess.run([sys.executable, "-m", "maqet_engine", "--json", *args],
                         capture_output=True, text=True, timeout=timeout,
                         env=os.environ.copy(), stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)
