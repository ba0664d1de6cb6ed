#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_vm_info
short_description: Describe maqet virtual machines
version_added: 0.1.0
description:
  - Returns one maqet VM (by O(name)) or all of them, with the observed run status (the
    store's record, the runner's lock and QEMU's process identity; the same reading as
    C(maqet status) and the inventory plugin). Never changes anything.
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
    description:
      - Describe only this VM. RV(vms) is empty when it does not exist.
    type: str
  live:
    description:
      - Also ask each running VM's runner for its live state (QMP status, the
        accelerator in use, the guest agent channel). Costs one round trip per running VM.
      - A VM with a guest agent channel (its definition sets C(agent) to V(true)) also gets
        what its agent reports (RV(vms[].guest)), one more round trip to the guest, bounded
        by O(agent_timeout).
    type: bool
    default: false
  events:
    description:
      - Also return each VM's last O(events) recorded events, oldest first, as
        RV(vms[].events), so that a failed play can show what the VM did - status
        changes, QEMU's events, stop rungs, re-adoptions, crashes and their reasons,
        snapshot operations, failed requests. V(0) returns none.
    type: int
    default: 0
  agent_timeout:
    description:
      - With O(live=true), seconds the guest agent of each VM gets to answer. One that does
        not answer in time gets RV(vms[].guest_error) instead of RV(vms[].guest).
    type: int
    default: 5
seealso:
  - module: maqet.vm.maqet_vm
"""

EXAMPLES = r"""
- name: All VMs
  maqet.vm.maqet_vm_info:
  register: all_vms

- name: One VM, with its live QMP status
  maqet.vm.maqet_vm_info:
    name: web1
    live: true
  register: web1

- name: What web1 did lately (for example after a failed task)
  maqet.vm.maqet_vm_info:
    name: web1
    events: 20
  register: web1_history

- ansible.builtin.debug:
    msg: "{{ item.time }} {{ item.kind }} {{ item.data }}"
  loop: "{{ web1_history.vms[0].events | default([]) }}"

- ansible.builtin.debug:
    msg: "web1 is {{ web1.vms[0].status }}"
  when: web1.exists
"""

RETURN = r"""
vms:
  description:
    - The VMs, sorted by name. Each item has the keys of RV(maqet.vm.maqet_vm#module:vm)
      (including C(argv)), and with O(live=true) for a VM whose runner is alive also
      the keys below.
  returned: always
  type: list
  elements: dict
  contains:
    qmp_status:
      description: QEMU's own run state (QMP C(query-status)), for example V(running),
        V(paused), V(prelaunch).
      returned: with O(live=true), for a VM whose runner is alive
      type: str
    adopted:
      description: The runner took over a QEMU that an earlier runner had started.
      returned: with O(live=true), for a VM whose runner is alive
      type: bool
    runner_error:
      description: Why the runner could not be asked (it did not answer in time).
      returned: with O(live=true), when the runner did not answer
      type: str
    events:
      description:
        - The VM's last O(events) events, oldest first (C(maqet events NAME)).
      returned: with O(events) above 0
      type: list
      elements: dict
      contains:
        kind:
          description: What happened, for example V(started), V(stop_rung),
            V(SHUTDOWN), V(crashed), V(snapshot_created), V(request_failed).
          type: str
          sample: crashed
        data:
          description: Its details, for example the C(reason) of a crash or the
            C(rung) of a stop.
          type: dict
          sample: {reason: QEMU killed by signal 9 (SIGKILL)}
        time:
          description: When, ISO 8601 with the host's UTC offset.
          type: str
          sample: "2024-05-01T12:00:00.123+00:00"
        at:
          description: When, in seconds since the epoch.
          type: float
        op_id:
          description: The operation that caused it (none for the guest's own doings).
          type: str
        id:
          description: The event's number in the store (increasing).
          type: int
        vm:
          description: The VM's name.
          type: str
    agent:
      description:
        - The guest agent channel as the runner sees it, null for a VM without one.
      returned: with O(live=true), for a VM whose runner is alive
      type: dict
      contains:
        state:
          description: V(connected), V(syncing), V(absent) (qemu-ga does not run in the
            guest, or the guest is rebooting) or V(closed).
          type: str
        last_sync:
          description: When the runner last brought the channel in step (seconds since the
            epoch), null before the first time.
          type: float
        since:
          description: When the state last changed (seconds since the epoch).
          type: float
        reason:
          description: Why it is not connected.
          type: str
    guest:
      description:
        - What the guest agent reports (the engine's C(guest_info)), null when it did not
          answer.
      returned: with O(live=true), for a running VM with a guest agent channel
      type: dict
      contains:
        os:
          description: C(guest-get-osinfo) (C(id), C(name), C(version-id), C(pretty-name),
            C(kernel-release), C(machine)).
          type: dict
        hostname:
          description: The guest's host name.
          type: str
        interfaces:
          description: Network interfaces, each with C(name), C(mac), C(addresses)
            (C(ADDRESS/PREFIX)), C(ipv4) and C(ipv6) (addresses only).
          type: list
          elements: dict
        filesystems:
          description: C(guest-get-fsinfo), null when the agent does not have it.
          type: list
          elements: dict
        agent:
          description: The agent's C(version).
          type: dict
    guest_error:
      description: Why the guest agent could not be asked (the error's one-line message).
      returned: with O(live=true), when a VM's guest agent did not answer
      type: str
  sample:
    - name: web1
      status: running
      tags: [web]
exists:
  description: Whether the VM named by O(name) exists.
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
from ansible_collections.maqet.vm.plugins.module_utils._vm import (
    VM_INFO_ARGUMENT_SPEC,
    run_vm_info,
)


def main():
    module = AnsibleModule(argument_spec=VM_INFO_ARGUMENT_SPEC, supports_check_mode=True)
    run_vm_info(module)


if __name__ == "__main__":
    main()
