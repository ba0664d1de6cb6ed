"""Helpers of the fleet tests (the maqet.vm.hypervisor role, playbooks over several
hypervisors, the inventory plugin over SSH) on top of :mod:`netns` and :mod:`multihost`.

- :func:`engine_wheel` builds the engine's wheel into the collection (the role installs
  it) and a wheelhouse of its dependencies, because the hosts reach no package index.
- :func:`fleet_inventory` writes the harness's inventory with more host variables: each
  host's own venv (the hosts share one filesystem, so one venv path would collide).
- :func:`plugin_config` writes a ``*.maqet.yml`` that lists the hosts' VMs over SSH.
- :func:`results` reads what a playbook's last play wrote for the controller.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from netns import Hypervisors

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-engine-wheel.sh"
# The dependencies' wheels, downloaded once per machine (scripts/setup.sh does it first).
WHEELHOUSE = Path(os.environ.get("MAQET_WHEELHOUSE",
                                 str(Path.home() / ".cache" / "maqet-wheelhouse")))
BUILD_TIMEOUT = 300.0  # the wheel ~3 s; a first wheelhouse download ~5 s


@functools.cache
def engine_wheel() -> Path:
    """Build the engine's wheel from this tree into roles/hypervisor/files/ (the same
    bytes for the same sources) and make sure the wheelhouse is complete; once per
    test session. Returns the wheel's path."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), "--wheelhouse", str(WHEELHOUSE)],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def engine_python(hv: Hypervisors, name: str) -> str:
    """Where the role puts the engine's Python on host ``name`` (its own venv)."""
    return str(hv[name].dir / "venv" / "bin" / "python")


def fleet_inventory(hv: Hypervisors, path: Path, *, engine: str = "tree",
                    per_host: dict[str, dict[str, Any]] | None = None) -> Path:
    """The harness's inventory plus, for each host, ``maqet_hypervisor_venv`` (its own
    directory) and the role's test settings (no apt update: the hosts reach no mirror; the
    wheelhouse: they reach no index). ``engine``: which Python runs the modules: ``tree``
    (the controller's venv with this working tree on PYTHONPATH, through the play's
    ``environment``), ``venv`` (the role's venv, which must exist), or ``none`` (the
    harness's default). ``per_host``: more variables by host name."""
    data = yaml.safe_load(hv.inventory.read_text())
    hosts = data["all"]["children"]["hypervisors"]["hosts"]
    for name, hostvars in hosts.items():
        hostvars["maqet_hypervisor_venv"] = str(hv[name].dir / "venv")
        if engine == "venv":
            hostvars["ansible_python_interpreter"] = engine_python(hv, name)
        hostvars.update((per_host or {}).get(name, {}))
    data["all"]["children"]["hypervisors"]["vars"] = {
        "ansible_pipelining": True,  # one ssh round trip per task, not four
        "maqet_hypervisor_apt_update_cache": False,
        "maqet_hypervisor_wheelhouse": str(WHEELHOUSE),
        "engine_pythonpath": str(REPO) if engine == "tree" else "",
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plugin_config(hv: Hypervisors, path: Path, *, engine: str = "tree",
                  hosts: list[str] | None = None, **options: Any) -> Path:
    """A ``*.maqet.yml`` listing the VMs of the hosts (all, or ``hosts``) over SSH with the
    harness's key and known_hosts. ``engine``: ``tree`` runs this working tree's engine
    with the controller venv's Python there, ``venv`` the role's venv."""
    entries = []
    for host in hv:
        if hosts is not None and host.name not in hosts:
            continue
        entry: dict[str, Any] = {"name": host.name, "host": host.address,
                                 "maqet_home": str(host.maqet_home)}
        if engine == "tree":
            entry["maqet_command"] = f"PYTHONPATH={REPO} {hv.python} -m maqet_engine"
        else:
            entry["python"] = engine_python(hv, host.name)
        entries.append(entry)
    config = {
        "plugin": "maqet.vm.maqet",
        "hypervisor_defaults": {"user": "root", "private_key_file": str(hv.identity),
                                "known_hosts_file": str(hv.known_hosts),
                                "ssh_common_args": "-o GlobalKnownHostsFile=/dev/null"},
        "hypervisors": entries,
        **options,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# The last play of a test playbook: write ``hostvars[host][var]`` of the hosts ``hosts``
# (a Jinja expression, for example ``groups['hypervisors']``) to a JSON file on the
# controller.
WRITE_RESULTS = """\
- name: Write the per-host results on the controller
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Results file
      ansible.builtin.copy:
        dest: "{{{{ results_file }}}}"
        content: "{{{{ dict({hosts} | zip({hosts} | map('extract', hostvars, '{var}')))
                    | to_nice_json }}}}"
        mode: "0600"
      check_mode: false
"""
