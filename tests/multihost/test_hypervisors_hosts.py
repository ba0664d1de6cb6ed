"""The harness's hosts as a controller sees them: real SSH into separate namespaces."""

from __future__ import annotations

import subprocess
import time

import pytest
import yaml
from netns import CONNECT_TIMEOUT, Hypervisors, link_names

pytestmark = pytest.mark.multihost


def ipv4_of(ip_br_addr: str) -> dict[str, list[str]]:
    """``ip -br addr`` output as {interface: [IPv4 addresses with prefix]}."""
    table = {}
    for line in ip_br_addr.splitlines():
        name, _state, *addrs = line.split()
        table[name.split("@")[0]] = [a for a in addrs if ":" not in a]
    return table


def test_each_host_sees_only_its_own_address(hypervisors: Hypervisors):
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]
    assert hv1.address != hv2.address
    for host in (hv1, hv2):
        over_ssh = host.ssh("ip -br addr").stdout
        assert ipv4_of(over_ssh) == {"lo": ["127.0.0.1/8"],
                                     "net0": [f"{host.address}/24"]}, over_ssh
        # The namespace's own view (no ssh) is the same.
        assert ipv4_of(host.run(["ip", "-br", "addr"]).stdout) == ipv4_of(over_ssh)
    # The controller reaches them from the root namespace, through the harness's bridge.
    root_view = subprocess.run(["ip", "-br", "addr", "show", "dev", hypervisors.bridge],
                               capture_output=True, text=True, check=True).stdout
    assert ipv4_of(root_view) == {hypervisors.bridge: [f"{hypervisors.bridge_address}/24"]}


def test_hosts_have_no_route_beyond_their_subnet(hypervisors: Hypervisors):
    host = hypervisors["hv1"]
    assert host.run(["ip", "-4", "route"]).stdout.split() == [
        str(hypervisors.subnet), "dev", "net0", "proto", "kernel", "scope", "link",
        "src", host.address]
    # A route lookup only (no packet leaves): anything outside the subnet is unreachable.
    lookup = host.run(["ip", "route", "get", "192.0.2.1"], check=False)
    assert lookup.returncode != 0 and "unreachable" in lookup.stderr, lookup
    # ...and the hosts see each other across the bridge, like hypervisors on one LAN.
    assert "dev net0" in host.run(["ip", "route", "get", hypervisors["hv2"].address]).stdout


def test_hosts_have_distinct_maqet_homes_in_the_inventory(hypervisors: Hypervisors):
    homes = {host.name: host.maqet_home for host in hypervisors}
    assert len(set(homes.values())) == 2
    assert all(home.is_dir() for home in homes.values())
    inventory = yaml.safe_load(hypervisors.inventory.read_text())
    hosts = inventory["all"]["children"]["hypervisors"]["hosts"]
    assert {name: vars_["maqet_home"] for name, vars_ in hosts.items()} == {
        name: str(home) for name, home in homes.items()}
    for host in hypervisors:
        assert hosts[host.name]["ansible_host"] == host.address
        assert "StrictHostKeyChecking=yes" in hosts[host.name]["ansible_ssh_common_args"]


def test_ssh_checks_host_keys(hypervisors: Hypervisors):
    host = hypervisors["hv1"]
    assert host.ssh("true").returncode == 0
    unknown = host.ssh("true", check=False, options=["-o", "UserKnownHostsFile=/dev/null"])
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr, unknown.stderr
    # hv2's key under hv1's address: a changed host key is refused too.
    wrong = hypervisors.dir / "wrong_known_hosts"
    key = hypervisors["hv2"].host_key.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"{host.address} {' '.join(key)}\n")
    changed = host.ssh("true", check=False, options=["-o", f"UserKnownHostsFile={wrong}"])
    assert changed.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr, changed.stderr


def test_a_host_with_sshd_down_refuses_at_once(hypervisors: Hypervisors):
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]
    hv1.down("sshd")
    started = time.monotonic()
    failed = hv1.ssh("true", check=False)
    assert time.monotonic() - started < 2.0
    assert failed.returncode == 255
    assert f"connect to host {hv1.address} port 22: Connection refused" in failed.stderr
    assert hv2.ssh("echo still here").stdout == "still here\n"
    hv1.up()
    assert hv1.ssh("echo back").stdout == "back\n"


def test_a_host_with_its_link_down_times_out(hypervisors: Hypervisors):
    hv1, hv2 = hypervisors["hv1"], hypervisors["hv2"]
    hv1.down("link")
    assert "state DOWN" in hv1.run(["ip", "link", "show", "net0"]).stdout
    started = time.monotonic()
    failed = hv1.ssh("true", check=False, options=["-o", "ConnectTimeout=2"])
    assert time.monotonic() - started < 2.0 + CONNECT_TIMEOUT
    assert failed.returncode == 255
    assert f"connect to host {hv1.address} port 22" in failed.stderr
    assert any(why in failed.stderr for why in ("timed out", "No route to host")), failed
    assert hv2.ssh("echo still here").stdout == "still here\n"
    hv1.up()
    assert hv1.ssh("echo back").stdout == "back\n"


def test_names_carry_the_prefix_and_fit_ifnamsiz(hypervisors: Hypervisors):
    ours = [name for name in link_names() if name.startswith(f"{hypervisors.prefix}-")]
    assert sorted(ours) == sorted([hypervisors.bridge, *(h.veth for h in hypervisors)])
    assert all(len(name) <= 15 for name in ours)
    assert "eth0" not in ours
