#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_vm
short_description: Define, start, stop, restart and remove QEMU virtual machines
version_added: 0.1.0
description:
  - Converges one maqet virtual machine to a desired state. It is defined (V(present)),
    defined and running (V(running)), defined and not running (V(stopped)), restarted
    (V(restarted)), or gone (V(absent)). One task creates and starts a VM.
  - The definition is the same mapping as a maqet YAML file, given inline as O(config)
    or as a file with O(config_file) (with both, O(config) is merged over the file).
    maqet normalizes it (sizes, defaults, sorted tags), so a definition that means the
    same VM never reports a change.
  - Changing the definition of a running VM stores it and reports
    RV(restart_required); O(recreate=true) restarts the VM to apply it now.
  - V(stopped) returns only after QEMU has exited (ACPI powerdown, then QMP quit, then
    SIGKILL after O(timeout)).
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
    details: Shows the normalized definition before and after.
  idempotent:
    support: full
    details: Except O(state=restarted), which restarts the VM every time.
options:
  name:
    description:
      - Name of the VM. Overrides C(name) of O(config) and O(config_file).
      - Enough on its own for every state but the first V(present) or V(running).
    type: str
  config:
    description:
      - The VM definition, as in a maqet YAML file (see docs/configuration.md of maqet).
      - Relative paths in it resolve against the working directory of the module
        (give absolute paths, for example with C(playbook_dir)).
    type: dict
    aliases:
      - definition
  config_file:
    description:
      - Path of a maqet YAML definition on the hypervisor host. Relative paths inside
        it resolve against its directory.
    type: path
  state:
    description:
      - V(present) defines (or redefines) the VM and leaves its run state alone.
      - V(running) defines it and makes sure it runs.
      - V(stopped) makes sure it does not run (graceful powerdown first).
      - V(restarted) stops it (when it runs) and starts it, every time.
      - V(absent) stops it when it runs (as V(stopped) does) and removes its definition.
    type: str
    default: present
    choices:
      - present
      - running
      - stopped
      - restarted
      - absent
  recreate:
    description:
      - When the definition of a running VM changed, restart it now so that the new
        definition takes effect. Without it the task reports RV(restart_required).
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for the guest to power off after an ACPI powerdown before QMP
        C(quit) and then SIGKILL are used.
    type: float
    default: 30
  force:
    description:
      - When stopping (V(stopped), V(restarted), V(absent), O(recreate)), do not wait
        for the guest to power off, send QMP C(quit) at once.
    type: bool
    default: false
  purge:
    description:
      - With O(state=absent), also delete the VM's directory (disks maqet created,
        logs). Without it those files are kept.
    type: bool
    default: false
seealso:
  - module: maqet.vm.maqet_vm_info
  - module: maqet.vm.maqet_qmp
  - plugin: maqet.vm.maqet
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Define and start a VM in one task
  maqet.vm.maqet_vm:
    state: running
    config:
      name: web1
      accel: tcg
      memory: 1G
      cpu: 2
      storage:
        - {name: root, type: qcow2, size: 10G}
      network:
        - type: user
          forward:
            - {host: 2222, guest: 22}
      tags: [web]

- name: Same VM from a definition file, applying a changed definition at once
  maqet.vm.maqet_vm:
    config_file: /srv/vms/web1.yml
    state: running
    recreate: true

- name: Stop it (returns after QEMU exited)
  maqet.vm.maqet_vm:
    name: web1
    state: stopped
    timeout: 60

- name: Remove it (stopping it first when it runs) and delete the disks maqet created
  maqet.vm.maqet_vm:
    name: web1
    state: absent
    force: true
    purge: true

- name: Use another maqet installation for a whole block
  module_defaults:
    group/maqet.vm.maqet:
      maqet_home: /srv/maqet
  block:
    - maqet.vm.maqet_vm:
        name: web1
        state: restarted
"""

RETURN = r"""
name:
  description: Name of the VM.
  returned: always
  type: str
  sample: web1
state:
  description: The state that was asked for.
  returned: always
  type: str
  sample: running
actions:
  description:
    - What was done, in order (in check mode, what would be done).
  returned: always
  type: list
  elements: str
  sample: ["defined", "started"]
restart_required:
  description:
    - The VM runs with another definition than the stored one; restart it (or use
      O(recreate=true)) to apply the stored one.
  returned: always
  type: bool
  sample: false
vm:
  description:
    - The VM as maqet records it after the task, or V(null) when it does not exist
      (also in check mode before its first creation).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the VM.
      type: str
      sample: web1
    status:
      description: Recorded run state.
      type: str
      sample: running
    spec:
      description: The normalized definition.
      type: dict
    spec_hash:
      description: Hash of the normalized definition.
      type: str
    tags:
      description: Tags of the definition.
      type: list
      elements: str
    runner_pid:
      description: PID of the VM's runner process, when it runs.
      type: int
    qemu_pid:
      description: PID of QEMU, when it runs.
      type: int
    accel:
      description: Accelerator QEMU uses (V(kvm) or V(tcg)), once started.
      type: str
    ports:
      description: Forwarded ports of user-mode networks.
      type: list
      elements: dict
    paths:
      description: The VM's directory and log files.
      type: dict
  sample:
    name: web1
    status: running
    tags: [web]
    accel: tcg
diff:
  description: Normalized definition before and after (diff mode only).
  returned: when diff mode is on
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.maqet.vm.plugins.module_utils._vm import (
    VM_ARGUMENT_SPEC,
    VM_REQUIRED_ONE_OF,
    run_vm,
)


def main():
    module = AnsibleModule(
        argument_spec=VM_ARGUMENT_SPEC,
        required_one_of=VM_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    run_vm(module)


if __name__ == "__main__":
    main()
