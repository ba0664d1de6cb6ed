"""The maqet.vm.hypervisor role against two hosts over real SSH: it installs the engine
bundled in the collection into each host's venv, reports KVM as it is (none here), runs
the modules afterwards, and changes nothing the second time; check mode predicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet import WRITE_RESULTS, engine_python, engine_wheel, fleet_inventory, results
from multihost import run_playbook  # tests/support
from netns import Hypervisors

import maqet_engine

pytestmark = [pytest.mark.multihost, pytest.mark.ansible]

ROLE = """\
- name: Prepare the hypervisors
  hosts: hypervisors
  gather_facts: false
  roles:
    - role: maqet.vm.hypervisor
      vars:
        maqet_hypervisor_set_python: true
  tasks:
    - name: The modules run with the role's Python now
      maqet.vm.maqet_vm_info:
        maqet_home: "{{ maqet_home }}"
      register: info
      when: not ansible_check_mode
""" + WRITE_RESULTS.format(hosts="groups['hypervisors']", var="maqet_hypervisor")


@pytest.fixture(scope="module")
def wheel() -> Path:
    return engine_wheel()


def test_role_installs_the_bundled_engine_once(hypervisors: Hypervisors, tmp_path: Path,
                                               wheel: Path):
    inventory = fleet_inventory(hypervisors, tmp_path / "inventory.yml", engine="none")
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE)
    out = tmp_path / "facts.json"

    # Check mode on fresh hosts: says it would install, installs nothing.
    check = run_playbook(inventory, playbook, tmp_path, "--check",
                         extra_vars={"results_file": str(out)})
    assert check.rc == 0, check.explain()
    for host in hypervisors:
        assert check.recap(host.name)["changed"] >= 3, check.explain()  # venv, dir, wheel...
        assert not (host.dir / "venv").exists()
    facts = results(out)
    assert facts["hv1"]["engine_version"] is None and facts["hv1"]["kvm"] is False

    first = run_playbook(inventory, playbook, tmp_path, extra_vars={"results_file": str(out)})
    assert first.rc == 0, first.explain()
    facts = results(out)
    for host in hypervisors:
        assert first.recap(host.name)["changed"] >= 4, first.explain()
        fact = facts[host.name]
        python = engine_python(hypervisors, host.name)
        assert fact["python"] == python and fact["venv"] == str(host.dir / "venv")
        assert fact["engine_version"] == maqet_engine.__version__
        # No vmx/svm on these machines: KVM is reported off, and why.
        assert fact["kvm"] is False and fact["cpu_virtualization"] is None
        assert "no vmx or svm in /proc/cpuinfo" in fact["reason"], fact
        # The venv's engine is this tree's, installed from the wheel (not the repo on a path).
        where = host.ssh([python, "-c", "import maqet_engine; print(maqet_engine.__file__)"]).stdout
        assert where.startswith(str(host.dir / "venv")), where
        assert (host.dir / "venv-wheels" / wheel.name).read_bytes() == wheel.read_bytes()

    # Second run and check mode: nothing to change.
    for args in ((), ("--check", "--diff")):
        again = run_playbook(inventory, playbook, tmp_path, *args,
                             extra_vars={"results_file": str(out)})
        assert again.rc == 0, again.explain()
        for host in hypervisors:
            assert again.recap(host.name)["changed"] == 0, again.explain()
    assert results(out)["hv2"]["engine_version"] == maqet_engine.__version__

    # A rebuilt wheel with other bytes (same version) is installed again, on every host.
    marker = hypervisors["hv1"].dir / "venv" / "maqet_engine" / "x_marker.py"
    assert not marker.exists()
    changed = tmp_path / wheel.name
    _rewrite_wheel(wheel, changed)
    original = wheel.read_bytes()
    try:
        wheel.write_bytes(changed.read_bytes())
        third = run_playbook(inventory, playbook, tmp_path, extra_vars={"results_file": str(out)})
        assert third.rc == 0, third.explain()
        for host in hypervisors:
            assert third.recap(host.name)["changed"] == 2, third.explain()  # copy + install
            site = next((host.dir / "venv" / "lib").glob("python3*/site-packages"))
            assert (site / "maqet_engine" / "x_marker.py").exists()
    finally:
        wheel.write_bytes(original)


def _rewrite_wheel(source: Path, target: Path) -> None:
    """A copy of the wheel with one more module (its RECORD updated): same name and
    version, other bytes."""
    import base64
    import hashlib
    import zipfile

    body = b"MARKER = True\n"
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data += f"maqet_engine/x_marker.py,sha256={digest},{len(body)}\n".encode()
            dst.writestr(item, data)
        dst.writestr("maqet_engine/x_marker.py", body)


def test_role_with_a_pip_requirement_and_no_wheel(hypervisors: Hypervisors, tmp_path: Path,
                                                  wheel: Path):
    """maqet_hypervisor_engine_pip installs a requirement from the wheelhouse (here: the
    engine's wheel put into a copy of it), without the bundled wheel."""
    import shutil

    from fleet import WHEELHOUSE

    house = tmp_path / "wheelhouse"
    shutil.copytree(WHEELHOUSE, house)
    shutil.copy(wheel, house)
    inventory = fleet_inventory(hypervisors, tmp_path / "inventory.yml", engine="none",
                                per_host={"hv1": {"maqet_hypervisor_wheelhouse": str(house),
                                                  "maqet_hypervisor_engine_pip":
                                                  f"maqet=={maqet_engine.__version__}"}})
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE.replace("hosts: hypervisors\n  gather_facts",
                                     "hosts: hv1\n  gather_facts")
                        .replace("groups['hypervisors']", "['hv1']"))
    out = tmp_path / "facts.json"
    first = run_playbook(inventory, playbook, tmp_path, extra_vars={"results_file": str(out)})
    assert first.rc == 0, first.explain()
    assert results(out)["hv1"]["engine_version"] == maqet_engine.__version__
    again = run_playbook(inventory, playbook, tmp_path, extra_vars={"results_file": str(out)})
    assert again.rc == 0 and again.recap("hv1")["changed"] == 0, again.explain()
    freeze = hypervisors["hv1"].ssh([engine_python(hypervisors, "hv1"), "-m", "pip",
                                     "freeze"]).stdout
    assert "maqet @ file://" not in freeze and f"maqet=={maqet_engine.__version__}" in freeze
    assert not list((hypervisors["hv1"].dir / "venv").glob("maqet-engine-*.installed"))
