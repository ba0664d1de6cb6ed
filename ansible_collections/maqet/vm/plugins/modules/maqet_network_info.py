#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_network_info
short_description: Describe maqet's named networks and the VMs on them
version_added: 0.1.0
description:
  - Returns one named network (by O(name)) or all of them, each with its normalized
    definition and the VMs whose definitions attach to it (NIC, MAC, link end, observed
    run status). Never changes anything.
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: N/A
    details: The module only reads.
  idempotent:
    support: full
options:
  name:
    description: Describe only this network. RV(networks) is empty when it does not exist.
    type: str
seealso:
  - module: maqet.vm.maqet_network
"""

EXAMPLES = r"""
- name: The lab segment and its VMs
  maqet.vm.maqet_network_info:
    name: lab
  register: lab

- ansible.builtin.debug:
    msg: "{{ lab.networks[0].vms | map(attribute='mac') | list }}"
  when: lab.exists
"""

RETURN = r"""
networks:
  description: The networks, sorted by name; each item has the keys of
    RV(maqet.vm.maqet_network#module:network), plus C(endpoints) (the host UDP addresses
    it uses), C(spec_hash), C(created_at) and C(updated_at).
  returned: always
  type: list
  elements: dict
exists:
  description: Whether the network named by O(name) exists.
  returned: when O(name) is given
  type: bool
  sample: true
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
    NETWORK_INFO_ARGUMENT_SPEC,
    run_network_info,
)


def main():
    module = AnsibleModule(argument_spec=NETWORK_INFO_ARGUMENT_SPEC, supports_check_mode=True)
    run_network_info(module)


if __name__ == "__main__":
    main()
