"""The molecule scenario (tests/ansible/molecule/default): syntax, converge,
idempotence, verify, cleanup on localhost against the tiny guest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ansible_helpers import BIN, PLAYBOOK_TIMEOUT

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]

HERE = Path(__file__).resolve().parent


def test_molecule_default_scenario(sandbox, guest_ready):
    import guest

    files = guest.ensure_guest()
    env = dict(sandbox.env, MAQET_GUEST_KERNEL=str(files.kernel),
               MAQET_GUEST_INITRD=str(files.initrd), MAQET_GUEST_APPEND=guest.GUEST_APPEND,
               MOLECULE_EPHEMERAL_DIRECTORY=str(sandbox.root / "molecule"))
    log = sandbox.logs / "molecule.out"
    with log.open("w") as out:
        proc = subprocess.run([str(BIN / "molecule"), "test"], cwd=HERE, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=PLAYBOOK_TIMEOUT, check=False)
    text = log.read_text()
    assert proc.returncode == 0, text[-8000:]
    for step in ("converge", "idempotence", "verify", "cleanup"):
        assert f"[default > {step}] Executed: Successful" in text, text[-8000:]
