#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_snapshot
short_description: Create, revert to and delete snapshots of maqet VMs
version_added: 0.1.0
description:
  - Makes sure a named snapshot of a VM exists (V(present)), does not exist
    (V(absent)), or reverts the VM to it (V(reverted)).
  - Without O(drive) the snapshot is VM-wide, on every writable qcow2 disk; on a running
    VM it includes RAM and device state (QMP snapshot jobs), on a stopped VM the disks
    only (qemu-img). With O(drive) it covers that one disk, whether the VM runs or not.
  - O(retention) keeps at most that many complete snapshots of the same scope
    (VM-wide, or that drive), deleting the oldest.
  - Needs a maqet engine with the snapshot API; with an older one the task fails with
    one line saying which version is needed.
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: V(present) and V(absent) are idempotent; V(reverted) reverts every time.
options:
  vm:
    description: Name of the VM.
    type: str
    required: true
  name:
    description: Name of the snapshot.
    type: str
    required: true
    aliases:
      - snapshot
  state:
    description:
      - V(present) creates the snapshot when it does not exist.
      - V(absent) deletes it when it exists.
      - V(reverted) loads it (a live snapshot into the running VM; an offline one into
        the stopped VM's disk).
    type: str
    default: present
    choices:
      - present
      - absent
      - reverted
  drive:
    description:
      - Storage entry (by its C(name) in the definition) of a per-disk snapshot. Not
        set, the snapshot is VM-wide.
    type: str
  live:
    description:
      - Not set, the snapshot is live exactly when the VM runs.
      - V(true) or V(false) insist on it; the task fails when the VM's run state
        disagrees (for example V(false) on a running VM).
    type: bool
  retention:
    description: With V(present), keep at most this many snapshots; the oldest go first.
    type: int
  timeout:
    description: Seconds one snapshot operation may take (a live one writes all guest RAM).
    type: float
    default: 300
seealso:
  - module: maqet.vm.maqet_snapshot_info
  - module: maqet.vm.maqet_vm
"""

EXAMPLES = r"""
- name: Live snapshot before an upgrade, keeping the last three
  maqet.vm.maqet_snapshot:
    vm: web1
    name: before-upgrade
    retention: 3

- name: Go back to it
  maqet.vm.maqet_snapshot:
    vm: web1
    name: before-upgrade
    state: reverted

- name: Snapshot of one disk only
  maqet.vm.maqet_snapshot:
    vm: web1
    drive: root
    name: clean-install

- name: Delete it
  maqet.vm.maqet_snapshot:
    vm: web1
    drive: root
    name: clean-install
    state: absent
"""

RETURN = r"""
vm:
  description: Name of the VM.
  returned: always
  type: str
  sample: web1
name:
  description: Name of the snapshot.
  returned: always
  type: str
  sample: before-upgrade
state:
  description: The state that was asked for.
  returned: always
  type: str
  sample: present
actions:
  description:
    - What was done, in order (in check mode, what would be done), each a verb with
      details. Verbs (docs/glossary.md); C(create_snapshot) (state V(present)),
      C(revert_snapshot) (V(reverted)), C(delete_snapshot) (V(absent); with C(reason)
      V(retention) for pruned ones, V(incomplete) for a snapshot on some disks only).
    - Details - C(snapshot) (its name), C(drive) (V(null) when VM-wide), C(disks),
      C(ram) (RAM and device state included), C(retention), C(ram_skipped) (a RAM
      snapshot reverted on a stopped VM - disks only).
  returned: always
  type: list
  elements: dict
  sample:
    - {action: create_snapshot, snapshot: before-upgrade, drive: null, disks: [root], ram: true}
drive:
  description: The drive of a per-disk snapshot, V(null) for a VM-wide one.
  returned: always
  type: str
  sample: null
live:
  description: Whether the VM was running, so the snapshot went through QMP.
  returned: always
  type: bool
  sample: true
snapshot:
  description:
    - The snapshot after the task (V(null) when absent); in check mode, before it.
    - Has the keys of the items of RV(maqet.vm.maqet_snapshot_info#module:snapshots).
  returned: always
  type: dict
  sample: {"name": "before-upgrade", "drive": null, "vm_state": true, "complete": true}
snapshots:
  description: All snapshots of the same scope after the task (in check mode, before it).
  returned: always
  type: list
  elements: dict
pruned:
  description: Snapshots deleted by O(retention).
  returned: always
  type: list
  elements: str
  sample: []
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
    SNAPSHOT_ARGUMENT_SPEC,
    run_snapshot,
)


def main():
    module = AnsibleModule(argument_spec=SNAPSHOT_ARGUMENT_SPEC, supports_check_mode=True)
    run_snapshot(module)


if __name__ == "__main__":
    main()
