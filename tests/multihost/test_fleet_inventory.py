"""The maqet inventory plugin over real SSH to two hypervisor hosts: the VMs of both, per
hypervisor groups and variables, connection variables through the hypervisor, names that
clash, a host that is down, host key checking that stays on."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fleet import plugin_config
from multihost import BIN, ansible_env  # tests/support
from netns import Hypervisors

pytestmark = [pytest.mark.multihost, pytest.mark.ansible]

INVENTORY_TIMEOUT = 120.0  # ansible-inventory over two hosts: ~2 s


def define(home: Path, **raw: Any) -> None:
    """Define a VM in a host's home (the hosts share this filesystem; ``present`` only)."""
    from maqet_engine.engine import EngineContext, apply, load_definition

    ctx = EngineContext.for_home(str(home), check_mode=False)
    apply(ctx, spec=load_definition(ctx, definition=raw), state="present")


def ssh_forward(port: int, address: str = "127.0.0.1") -> list[dict[str, Any]]:
    return [{"type": "user", "forward": [{"host": port, "guest": 22, "host_address": address}]}]


def unwrap(value: Any) -> Any:
    """--list shows plugin-set strings as {"__ansible_unsafe": ...} (ansible-core 2.19)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def inventory(config: Path, root: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(config), "--list"],
                          capture_output=True, text=True, env=ansible_env(root), cwd=root,
                          timeout=INVENTORY_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
    data = unwrap(json.loads(proc.stdout)) if proc.returncode == 0 else {}
    return proc, data


def members(data: dict, group: str) -> set[str]:
    return set(data.get(group, {}).get("hosts", []))


@pytest.fixture
def fleet(hypervisors: Hypervisors) -> Hypervisors:
    """hv1: web (forward on its loopback), db; hv2: web (forward on every interface),
    cache (forward on hv2's own address)."""
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]
    define(hv1.maqet_home, name="web", tags=["web"], network=ssh_forward(2222))
    define(hv1.maqet_home, name="db", tags=["db"])
    define(hv2.maqet_home, name="web", tags=["web"], network=ssh_forward(2222, "0.0.0.0"))
    define(hv2.maqet_home, name="cache", network=ssh_forward(2223, hv2.address))
    return hypervisors


def test_lists_the_vms_of_every_hypervisor(fleet: Hypervisors, tmp_path: Path):
    config = plugin_config(fleet, tmp_path / "fleet.maqet.yml", include_stopped=True,
                           name_template="{{ hypervisor }}-{{ name }}")
    proc, data = inventory(config, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert members(data, "maqet") == {"hv1-web", "hv1-db", "hv2-web", "hv2-cache"}
    assert members(data, "maqet_hypervisor_hv1") == {"hv1-web", "hv1-db"}
    assert members(data, "maqet_hypervisor_hv2") == {"hv2-web", "hv2-cache"}
    assert members(data, "maqet_tag_web") == {"hv1-web", "hv2-web"}
    assert members(data, "maqet_defined") == {"hv1-web", "hv1-db", "hv2-web", "hv2-cache"}
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["hv2-web"]["maqet_hypervisor"] == "hv2"
    assert hostvars["hv2-web"]["maqet_name"] == "web"
    assert hostvars["hv2-web"]["maqet_status"] == "defined"

    hv1, hv2 = fleet["hv1"], fleet["hv2"]
    # On hv1's loopback: reached through hv1, with hv1's own ssh options.
    web1 = hostvars["hv1-web"]
    assert (web1["ansible_host"], web1["ansible_port"]) == (hv1.address, 2222)
    args = shlex.split(web1["ansible_ssh_common_args"])
    proxy = shlex.split(args[1].removeprefix("ProxyCommand="))
    assert proxy[-3:] == ["-W", "127.0.0.1:2222", hv1.address]
    assert f"UserKnownHostsFile={fleet.known_hosts}" in proxy
    assert "StrictHostKeyChecking=yes" in proxy and str(fleet.identity) in proxy
    assert args[2:] == ["-o", f"HostKeyAlias=[{hv1.address}]:2222"]
    # On every interface of hv2: hv2's address. On hv2's own address: that address.
    assert (hostvars["hv2-web"]["ansible_host"], hostvars["hv2-web"]["ansible_port"]) == (
        hv2.address, 2222)
    assert (hostvars["hv2-cache"]["ansible_host"], hostvars["hv2-cache"]["ansible_port"]) == (
        hv2.address, 2223)
    assert "ansible_ssh_common_args" not in hostvars["hv2-web"]
    assert "ansible_host" not in hostvars["hv1-db"]


def test_same_name_on_two_hypervisors_is_a_warning_naming_both(fleet: Hypervisors,
                                                                tmp_path: Path):
    config = plugin_config(fleet, tmp_path / "fleet.maqet.yml", include_stopped=True)
    proc, data = inventory(config, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert members(data, "maqet") == {"web", "db", "cache"}
    assert data["_meta"]["hostvars"]["web"]["maqet_hypervisor"] == "hv1"
    assert "hypervisors hv1 and hv2 both have a VM named web" in " ".join(proc.stderr.split())


def test_a_host_that_is_down_is_named_and_the_other_is_listed(fleet: Hypervisors,
                                                              tmp_path: Path):
    hv2 = fleet["hv2"]
    hv2.down("sshd")
    config = plugin_config(fleet, tmp_path / "fleet.maqet.yml", include_stopped=True,
                           name_template="{{ hypervisor }}-{{ name }}", ssh_timeout=10)
    proc, data = inventory(config, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert members(data, "maqet") == {"hv1-web", "hv1-db"}
    stderr = " ".join(proc.stderr.split())
    assert f"hypervisor hv2 ({hv2.address}) is unreachable over SSH" in stderr, stderr
    assert "Connection refused" in stderr and "its VMs are not listed" in stderr

    strict = plugin_config(fleet, tmp_path / "strict.maqet.yml", include_stopped=True,
                           name_template="{{ hypervisor }}-{{ name }}", strict=True)
    proc, _ = inventory(strict, tmp_path)
    assert proc.returncode != 0
    assert f"hypervisor hv2 ({hv2.address}) is unreachable" in " ".join(proc.stderr.split())
    hv2.up()
    proc, data = inventory(strict, tmp_path)
    assert proc.returncode == 0 and members(data, "maqet_hypervisor_hv2") == {
        "hv2-web", "hv2-cache"}


def test_host_keys_are_checked(fleet: Hypervisors, tmp_path: Path):
    """A hypervisor whose key is not in the known_hosts file is refused, not trusted."""
    config = plugin_config(fleet, tmp_path / "fleet.maqet.yml", include_stopped=True,
                           name_template="{{ hypervisor }}-{{ name }}")
    hv2 = fleet["hv2"]
    only_hv1 = tmp_path / "known_hosts"
    only_hv1.write_text("".join(line for line in fleet.known_hosts.read_text().splitlines(True)
                                if not line.startswith(hv2.address + " ")))
    text = config.read_text().replace(str(fleet.known_hosts), str(only_hv1))
    config.write_text(text)
    proc, data = inventory(config, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert members(data, "maqet") == {"hv1-web", "hv1-db"}
    assert "Host key verification failed" in proc.stderr, proc.stderr
    assert only_hv1.read_text().count("\n") == 1  # nothing was added to it
