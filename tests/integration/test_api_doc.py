"""docs/api.md's example runs as written (real QEMU: the VM is firmware only)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"

pytestmark = pytest.mark.qemu


def test_the_api_example_runs(maqet_home: Path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "True ['defined', 'started']"
    assert lines[1:3] == ["running", "['running']"]
    assert lines[3] == "['stopped'] stopped"
    assert lines[4].startswith("4 VM 'demo' is running; ")
    assert lines[5] == "['stop', 'remove']"
    assert not list((maqet_home / "data" / "vms").glob("*"))
