#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_network
short_description: Define and remove named networks that maqet VMs attach to
version_added: 0.1.0
description:
  - Makes sure a named network exists with the given definition (V(present)) or does not
    exist (V(absent)). VMs attach to it by name, with a NIC whose C(network) key is the
    network's name in their M(maqet.vm.maqet_vm) definition.
  - V(segment) is an Ethernet segment carried in UDP multicast by QEMU (no privileges, no
    daemon). On O(interface=lo), its default, it joins the VMs of one host; name the
    interface that reaches the other hypervisors and define the same network (same name)
    on each of them to span them. Its group and port are derived from the name unless
    given.
  - V(link) is a point-to-point Ethernet link between two VMs (UDP between its ends
    O(end_a) and O(end_b)); each VM's NIC says which end it is, C(end=a) or C(end=b).
  - V(bridged) attaches VMs to an existing host bridge O(bridge) through tap devices maqet
    creates at each start and that disappear with QEMU. Starting VMs on it needs root.
  - maqet normalizes the definition (derived values written out), so a definition that
    means the same network never reports a change.
  - Changing a network that running VMs use reports RV(restart_required) and lists them
    in RV(network.vms); they run on the old definition until restarted (for example
    M(maqet.vm.maqet_vm) with O(maqet.vm.maqet_vm#module:recreate=true)).
  - Removing a network that VM definitions still name fails, naming the VMs.
  - Security. Everyone who can join a segment's multicast group on its interface is on
    the segment; on V(lo), that is every local user. See docs/networks.md of maqet.
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
    details: Computes the same actions and diff as a real run, without side effects.
  diff_mode:
    support: full
    details: Shows the normalized network definition before and after.
  idempotent:
    support: full
options:
  name:
    description: Name of the network.
    type: str
    required: true
  state:
    description:
      - V(present) creates the network or changes its definition.
      - V(absent) removes it; fails while VM definitions name it.
    type: str
    default: present
    choices:
      - present
      - absent
  type:
    description:
      - Kind of network. Required with V(present) unless O(definition) has it.
    type: str
    choices:
      - segment
      - link
      - bridged
  interface:
    description:
      - V(segment) only. Host interface that carries the segment (QEMU joins the group
        and sends through the interface's IPv4 address). Never every interface.
      - Not set, V(lo), which keeps the segment on this host.
    type: str
  group:
    description:
      - V(segment) only. IPv4 multicast group. Not set, derived from the name
        (239.255.X.Y), so the same name is the same segment on every host.
    type: str
  port:
    description: V(segment) only. UDP port. Not set, derived from the name (20000-29999).
    type: int
  ttl:
    description:
      - V(segment) only. IP TTL of the segment's packets. Not set, V(1), so they never
        leave the link.
    type: int
  end_a:
    description:
      - V(link) only. End C(a), C(ADDRESS[:PORT]). Not set, 127.0.0.1 and a port derived
        from the name.
    type: str
  end_b:
    description: V(link) only. End C(b), as O(end_a) (the derived port plus one).
    type: str
  bridge:
    description: V(bridged) only. The existing host bridge. Required for V(bridged).
    type: str
  definition:
    description:
      - The network definition as a mapping (the keys of docs/configuration.md, "Network
        definitions", of maqet). The options above override its keys.
    type: dict
seealso:
  - module: maqet.vm.maqet_network_info
  - module: maqet.vm.maqet_vm
"""

EXAMPLES = r"""
- name: A segment for the VMs of this host
  maqet.vm.maqet_network:
    name: lab
    type: segment

- name: Two VMs on it, each with user networking for management too
  maqet.vm.maqet_vm:
    state: running
    definition:
      name: "{{ item }}"
      memory: 1G
      storage: [{name: root, type: qcow2, size: 10G}]
      network:
        - type: user
        - network: lab
  loop: [web1, db1]

- name: The same segment on every hypervisor, over the interface that joins them
  maqet.vm.maqet_network:
    name: lab-wide
    type: segment
    interface: eth1

- name: A point-to-point link between two hypervisors' VMs
  maqet.vm.maqet_network:
    name: wire
    type: link
    end_a: 10.0.0.11:31000
    end_b: 10.0.0.12:31000

- name: VMs on an existing host bridge (root)
  maqet.vm.maqet_network:
    name: lan
    type: bridged
    bridge: br0

- name: Remove a network (fails while VMs use it)
  maqet.vm.maqet_network:
    name: lab
    state: absent
"""

RETURN = r"""
name:
  description: Name of the network.
  returned: always
  type: str
  sample: lab
state:
  description: The state that was asked for.
  returned: always
  type: str
  sample: present
actions:
  description: What was done (in check mode, what would be done), each a stable verb in
    C(action) - C(define_network), C(redefine_network) or C(remove_network).
  returned: always
  type: list
  elements: dict
  sample: [{action: define_network}]
restart_required:
  description: The network changed while VMs run on its old definition (see
    RV(network.vms)).
  returned: always
  type: bool
  sample: false
network:
  description: The network after the task (in check mode, as it would be); V(null) with
    V(absent).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the network.
      type: str
    type:
      description: V(segment), V(link) or V(bridged).
      type: str
    spec:
      description: The normalized definition (derived group, port and ends written out).
      type: dict
      sample: {name: lab, type: segment, interface: lo, group: 239.255.191.67,
               port: 27268, ttl: 1}
    summary:
      description: Where it is, for people.
      type: str
      sample: 239.255.191.67:27268 on lo (ttl 1)
    vms:
      description: The VMs whose definitions attach to it, each with C(vm), C(nic) (NIC
        position), C(mac), C(end) (links), C(status), C(active) and C(restart_required)
        (it runs on an older definition of the network).
      type: list
      elements: dict
diff:
  description: The normalized definition before and after (diff mode only), as
    C({spec}); an absent network is an empty mapping.
  returned: when diff mode is on
  type: dict
op_id:
  description:
    - The operation id of this task (O(op_id), or the one made for it). C(maqet events
      --op ID) on the hypervisor host shows what the task caused. Also returned when
      the task fails.
  returned: always
  type: str
  sample: 3f2a9c1b0d4e
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maqet.vm.plugins.module_utils._network import (
    NETWORK_ARGUMENT_SPEC,
    NETWORK_REQUIRED_IF,
    run_network,
)


def main():
    module = AnsibleModule(
        argument_spec=NETWORK_ARGUMENT_SPEC,
        required_if=NETWORK_REQUIRED_IF,
        supports_check_mode=True,
    )
    run_network(module)


if __name__ == "__main__":
    main()
