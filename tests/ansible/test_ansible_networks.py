"""maqet_network four ways, and networks in maqet_vm_info, through real ansible-playbook."""

from __future__ import annotations

import secrets

import pytest

pytestmark = pytest.mark.ansible


def test_network_four_ways(sandbox):
    run = sandbox.playbook("networks.yml",
                           extra_vars={"network": f"lab-{secrets.token_hex(3)}"})
    assert run.rc == 0, run.explain()
    recap = run.recap()
    assert recap["failed"] == 0 and recap["ignored"] == 1, run.explain()
    # The diff of the TTL change reaches the user's terminal.
    assert '-        "ttl": 1,' in run.stdout and '+        "ttl": 2,' in run.stdout, run.explain()
