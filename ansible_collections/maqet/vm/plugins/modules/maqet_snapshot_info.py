#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_snapshot_info
short_description: List the snapshots of a maqet VM
version_added: 0.1.0
description:
  - Lists the snapshots of a VM, VM-wide or of one O(drive), read from the images
    themselves (C(qemu-img) JSON when stopped, QMP when running) plus maqet's records.
    Never changes anything.
  - Needs a maqet engine with the snapshot API.
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
  vm:
    description: Name of the VM.
    type: str
    required: true
  name:
    description: Only this snapshot.
    type: str
    aliases:
      - snapshot
  drive:
    description: The snapshots of this storage entry (not set, the VM-wide view).
    type: str
seealso:
  - module: maqet.vm.maqet_snapshot
"""

EXAMPLES = r"""
- name: Snapshots of web1
  maqet.vm.maqet_snapshot_info:
    vm: web1
  register: snaps

- ansible.builtin.debug:
    msg: "{{ snaps.snapshots | map(attribute='name') | list }}"
"""

RETURN = r"""
vm:
  description: Name of the VM.
  returned: always
  type: str
  sample: web1
snapshots:
  description: The snapshots, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the snapshot.
      type: str
    drive:
      description: The drive asked for, V(null) for the VM-wide view.
      type: str
    drives:
      description: Storage entries that hold the snapshot.
      type: list
      elements: str
    complete:
      description: Whether every disk of the scope holds it.
      type: bool
    vm_state:
      description: Whether RAM and device state are included.
      type: bool
    vm_state_size:
      description: Size of the saved RAM and device state in bytes.
      type: int
    created_at:
      description: Creation time (seconds since the epoch).
      type: float
    vm_clock:
      description: Seconds the guest had run when the snapshot was taken.
      type: float
    managed:
      description: Whether it was made through maqet.
      type: bool
    recorded_at:
      description: When maqet recorded making it (seconds since the epoch), V(null) when
        it was not made through maqet.
      type: float
    vm_state_drive:
      description: The disk holding the RAM and device state, V(null) without one.
      type: str
    size:
      description: Size of the saved RAM and device state in bytes, V(null) without one.
      type: int
    created:
      description: Same as RV(snapshots[].created_at).
      type: float
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
from ansible_collections.maqet.vm.plugins.module_utils._snapshot import (
    SNAPSHOT_INFO_ARGUMENT_SPEC,
    run_snapshot_info,
)


def main():
    module = AnsibleModule(argument_spec=SNAPSHOT_INFO_ARGUMENT_SPEC, supports_check_mode=True)
    run_snapshot_info(module)


if __name__ == "__main__":
    main()
