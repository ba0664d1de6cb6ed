"""One finished ansible command, and running one with its output in files (never a
pipe a reader might close early). Shared by the single-host Ansible tests
(``tests/ansible/ansible_helpers.py``) and the multi-host ones (``multihost.py``)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    """One finished ansible command."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return (f"$ {' '.join(self.argv)}\nrc={self.rc}\n--- stdout\n{self.stdout[-6000:]}\n"
                f"--- stderr\n{self.stderr[-3000:]}")

    def recap(self, host: str = "localhost") -> dict[str, int]:
        """The PLAY RECAP counters of ``host``."""
        match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", self.stdout, re.MULTILINE)
        assert match, self.explain()
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def run_logged(argv: list[str], logs: Path, count: int, *, env: Mapping[str, str],
               cwd: Path, timeout: float) -> Run:
    """Run ``argv`` with stdin closed, stdout and stderr in ``logs/<count>.out|err``."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{count:02d}.out", logs / f"{count:02d}.err"
    with out.open("w") as fout, err.open("w") as ferr:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr,
                              env=dict(env), cwd=cwd, timeout=timeout, check=False)
    return Run(argv, proc.returncode, out.read_text(), err.read_text())
