# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: maqet
short_description: maqet virtual machines as inventory hosts
version_added: 0.1.0
author:
  - maqet developers (@maqet)
description:
  - Lists the VMs of one maqet installation as hosts, read straight from maqet's state
    store (no request to any VM), so large inventories are fast.
  - Lists running VMs by default; O(include_stopped) lists every defined VM.
  - Groups C(maqet) (all listed VMs), C(maqet_<status>) (for example C(maqet_running))
    and C(maqet_tag_<tag>) for each tag of a VM's definition (characters other than
    letters, digits and C(_) become C(_)).
  - Sets C(maqet_*) host variables (see O(ssh_guest_port) for C(ansible_host)), among
    them C(maqet_networks), the VM's NICs (C(nic), C(type), C(network), C(network_type),
    C(mac), C(end)), for example to write static addresses per named network.
  - The config file name must end in C(.maqet.yml) or C(.maqet.yaml).
requirements:
  - maqet_engine (C(pip install maqet)) in the Python that runs Ansible
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a config of this plugin.
    required: true
    type: str
    choices:
      - maqet.vm.maqet
  maqet_home:
    description:
      - Directory of the maqet installation to list, like E(MAQET_HOME). A relative
        path starts from the directory of the inventory file.
      - Not set, and E(MAQET_HOME) not set either, the XDG directories of the user
        running Ansible are used.
    type: str
    env:
      - name: MAQET_HOME
  include_stopped:
    description: Also list VMs that are not running (defined, stopped, crashed).
    type: bool
    default: false
  ssh_guest_port:
    description:
      - When a user-mode network forwards a host TCP port to this guest port, the host
        gets C(ansible_host) (the forward's host address, C(127.0.0.1) when it listens
        on every interface) and C(ansible_port) (the host port).
      - Set to V(0) to never set them.
    type: int
    default: 22
"""

EXAMPLES = r"""
# demo.maqet.yml: running VMs, grouped, with a few composed variables
plugin: maqet.vm.maqet
maqet_home: /srv/maqet
include_stopped: true
compose:
  ansible_user: "'root'"
  memory_mib: maqet_memory // 1048576 if maqet_memory else none
groups:
  big: (maqet_memory or 0) >= 4294967296
keyed_groups:
  - key: maqet_accel
    prefix: accel
    default_value: none
"""

import os
import re

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible_collections.maqet.vm.plugins.plugin_utils._unsafe import make_unsafe

try:
    from maqet_engine.engine import EngineContext
    from maqet_engine.errors import MaqetError
except ImportError:
    EngineContext = None

    class MaqetError(Exception):
        pass

ACTIVE = ("starting", "running", "paused", "stopping")  # statuses with a QEMU process
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


def group_name(text):
    """A valid Ansible group name from a status or tag."""
    return _GROUP_CHARS.sub("_", text)


def ssh_forward(ports, guest_port):
    """(address, host port) of the first TCP forward to ``guest_port``, or None."""
    if not guest_port:
        return None
    for fwd in ports or []:
        if fwd.get("guest") == guest_port and fwd.get("protocol", "tcp") == "tcp":
            address = fwd.get("host_address") or "127.0.0.1"
            if address == "0.0.0.0":
                address = "127.0.0.1"
            return address, fwd.get("host")
    return None


def read_vms(home):
    """Every VM of the installation as plain, JSON-able data (cacheable).

    One read of the state store through the engine's ``list_vms`` (no request to any
    VM): the status is the engine's one reading of the record, the runner's lock and
    QEMU's identity, so a VM whose runner and QEMU are gone shows as ``crashed`` here
    exactly as in ``maqet status`` and ``maqet_vm_info`` (the store is not modified).
    """
    from maqet_engine import engine

    ctx = EngineContext.for_home(home, check_mode=True)
    vms = []
    for view in engine.list_vms(ctx).data:
        spec = view["spec"]
        vms.append({
            "name": view["name"],
            "id": view["id"],
            "status": view["status"],
            "runner_pid": view["runner_pid"],
            "qemu_pid": view["qemu_pid"],
            "accel": view["accel"],
            "tags": list(view["tags"]),
            "cpu": spec.get("cpu"),
            "memory": spec.get("memory"),
            "machine": spec.get("machine"),
            "spec_hash": view["spec_hash"],
            "restart_required": view["restart_required"],
            "ports": view["ports"],
            "networks": [{"network": nic["network"], "type": nic["type"],
                          "network_type": nic["network_type"], "mac": nic["mac"],
                          "nic": nic["nic"], "end": nic["end"]}
                         for nic in view.get("networks") or []],
            "spec": spec,
        })
    return vms


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "maqet.vm.maqet"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".maqet.yml", ".maqet.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if EngineContext is None:
            raise AnsibleError(
                "the maqet inventory needs the maqet engine (Python package maqet_engine) in "
                "the Python that runs Ansible: pip install maqet")
        home = self.get_option("maqet_home")
        if home:
            home = os.path.expanduser(home)
            if not os.path.isabs(home):
                home = os.path.join(os.path.dirname(os.path.abspath(path)), home)
            if not os.path.isdir(home):
                message = ("maqet inventory {0}: maqet_home {1} does not exist, so it lists no "
                           "VMs; check the path (or create VMs there first)".format(path, home))
                if self.get_option("strict"):
                    raise AnsibleParserError(message)
                self.display.warning(message)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        vms = None
        if use_cache:
            try:
                vms = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if vms is None:
            try:
                vms = read_vms(home)
            except MaqetError as err:
                raise AnsibleParserError("maqet inventory {0}: {1}".format(path, err)) from err
        if update_cache:
            self._cache[cache_key] = vms
        self._populate(vms)

    def _populate(self, vms):
        include_stopped = self.get_option("include_stopped")
        strict = self.get_option("strict")
        guest_port = self.get_option("ssh_guest_port")
        self.inventory.add_group("maqet")
        for vm in vms:
            if not include_stopped and vm["status"] not in ACTIVE:
                continue
            host = self.inventory.add_host(make_unsafe(vm["name"]), group="maqet")
            status_group = self.inventory.add_group(group_name("maqet_" + vm["status"]))
            self.inventory.add_child(status_group, host)
            for tag in vm["tags"]:
                tag_group = self.inventory.add_group(make_unsafe(group_name("maqet_tag_" + tag)))
                self.inventory.add_child(tag_group, host)
            hostvars = {"maqet_" + key: value for key, value in vm.items()}
            forward = ssh_forward(vm["ports"], guest_port)
            if forward:
                hostvars["ansible_host"], hostvars["ansible_port"] = forward
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, make_unsafe(value))
            hostvars = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host,
                                              strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host,
                                           strict=strict)
