"""maqet_vm present/absent and maqet_vm_info through real ansible-playbook runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ansible


def test_present_absent_four_ways(sandbox):
    run = sandbox.playbook("definition.yml")
    assert run.rc == 0, run.explain()
    recap = run.recap()
    assert recap["failed"] == 0 and recap["ignored"] == 2, run.explain()
    # The diff of the redefinition reaches the user's terminal.
    assert '-        "memory": 536870912,' in run.stdout, run.explain()
    assert '+        "memory": 1073741824,' in run.stdout, run.explain()


def test_missing_engine_fails_in_one_line(sandbox, tmp_path):
    """A module run by a Python without maqet_engine says how to install it."""
    import venv

    bare = tmp_path / "bare-venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(bare)
    python = bare / "bin" / "python"
    sandbox.inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={python}\n")
    run = sandbox.playbook("missing_engine.yml")
    assert run.rc == 0, run.explain()
