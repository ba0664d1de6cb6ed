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
  - A live snapshot covers the whole running VM, RAM and device state included; an
    offline snapshot covers one disk (O(drive)) of a stopped VM.
  - O(retention) keeps at most that many snapshots of the same kind, deleting the
    oldest after creating a new one.
  - Needs a maqet engine with the snapshot API (maqet_engine 0.2.0 or later); with an
    older one the task fails with one line saying so.
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
      - Storage entry (by its C(name) in the definition) of an offline, per-disk
        snapshot. The VM must be stopped.
    type: str
  live:
    description:
      - V(true) takes a VM-wide snapshot of the running VM including RAM.
      - Default is live when the VM runs and O(drive) is not given.
    type: bool
  retention:
    description: With V(present), keep at most this many snapshots; the oldest go first.
    type: int
  timeout:
    description: Seconds to wait for a live snapshot job.
    type: float
    default: 30
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

- name: Offline snapshot of one disk of a stopped VM
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
  description: What was done (in check mode, what would be done).
  returned: always
  type: list
  elements: str
  sample: ["created before-upgrade (live, with RAM)"]
snapshot:
  description: The snapshot after the task (V(null) when absent).
  returned: always
  type: dict
  sample: {"name": "before-upgrade", "drive": null, "vm_state": true, "size": 44040192}
pruned:
  description: Snapshots deleted by O(retention).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maqet.vm.plugins.module_utils._snapshot import (
    SNAPSHOT_ARGUMENT_SPEC,
    SNAPSHOT_EXCLUSIVE,
    run_snapshot,
)


def main():
    module = AnsibleModule(
        argument_spec=SNAPSHOT_ARGUMENT_SPEC,
        mutually_exclusive=SNAPSHOT_EXCLUSIVE,
        supports_check_mode=True,
    )
    run_snapshot(module)


if __name__ == "__main__":
    main()
