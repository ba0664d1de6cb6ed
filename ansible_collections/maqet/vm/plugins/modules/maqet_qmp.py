#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_qmp
short_description: Send QMP commands, key presses or text to a running VM, or take a screendump
version_added: 0.1.0
description:
  - Talks to a running maqet VM through its runner (never to QEMU's QMP socket
    directly). Exactly one of O(command), O(keys), O(text) or O(screendump) is given.
  - Read-only QMP commands (C(query-*), C(x-query-*), C(qom-get), C(qom-list),
    C(qom-list-types), C(qom-list-properties), C(device-list-properties)) report no
    change; every other command reports a change. O(read_only) overrides the guess.
  - A QMP error fails the task; RV(error_class) holds QMP's error class (for example
    C(GenericError) or C(CommandNotFound)).
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
    details:
      - Read-only commands and screendumps run in check mode (they change nothing);
        other commands, O(keys) and O(text) are not sent and report a change.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Read-only commands never report a change; a screendump reports one only when
        the picture differs from the file at O(screendump) (then the file is replaced).
        A blinking cursor alternates between two pictures, so two screendumps of an
        idle text console may still differ. Key presses, text and other commands
        change the VM every time.
options:
  vm:
    description: Name of the VM; it must be running.
    type: str
    required: true
    aliases:
      - name
  command:
    description: QMP command to execute, for example C(query-status) or C(system_reset).
    type: str
  arguments:
    description: Arguments of O(command).
    type: dict
    default: {}
  read_only:
    description:
      - Whether O(command) only reads state (then it reports no change and runs in check
        mode). Default is a guess from the command's name.
    type: bool
  keys:
    description:
      - Key chords to press, in order, for example C(ctrl-alt-delete), C(ret) or C(a).
    type: list
    elements: str
  text:
    description: Text to type on the VM's keyboard (US layout), for example C("root\n").
    type: str
  screendump:
    description:
      - Take a screenshot of the VM's display and store it at this path on the
        hypervisor host. Relative paths resolve against the module's working directory.
    type: path
    aliases:
      - dest
  screendump_format:
    description: Image format of O(screendump).
    type: str
    default: png
    choices:
      - png
      - ppm
  timeout:
    description: Seconds to wait for the runner's answer.
    type: float
    default: 30
seealso:
  - module: maqet.vm.maqet_vm
  - name: QMP reference
    description: The commands QEMU's QMP understands.
    link: https://www.qemu.org/docs/master/interop/qemu-qmp-ref.html
"""

EXAMPLES = r"""
- name: Ask QEMU for the run state (never reports a change)
  maqet.vm.maqet_qmp:
    vm: web1
    command: query-status
  register: status

- name: Hot-plug nothing, just reset the guest
  maqet.vm.maqet_qmp:
    vm: web1
    command: system_reset

- name: Press ctrl-alt-delete
  maqet.vm.maqet_qmp:
    vm: web1
    keys: [ctrl-alt-delete]

- name: Type a command on the console
  maqet.vm.maqet_qmp:
    vm: web1
    text: "uname -a\n"

- name: Screenshot
  maqet.vm.maqet_qmp:
    vm: web1
    screendump: /tmp/web1.png
"""

RETURN = r"""
command:
  description: The QMP command that was sent.
  returned: when O(command) is given
  type: str
  sample: query-status
read_only:
  description: Whether the command was treated as read-only.
  returned: when O(command) is given
  type: bool
  sample: true
result:
  description: QMP's C(return) value (not set when check mode skipped the command).
  returned: when O(command) is given and the command was sent
  type: raw
  sample: {"running": true, "singlestep": false, "status": "running"}
sent:
  description: Number of key chords sent; the task returns once the guest has them
    all (the runner paces the keys itself).
  returned: when O(keys) or O(text) is given, not in check mode
  type: int
  sample: 3
dest:
  description: Absolute path of the screendump.
  returned: when O(screendump) is given
  type: str
  sample: /tmp/web1.png
format:
  description: Image format of the screendump.
  returned: when O(screendump) is given
  type: str
  sample: png
checksum:
  description: SHA-1 of the screendump just taken (the file at RV(dest) has it when
    the task reports a change, or had it already).
  returned: when O(screendump) is given
  type: str
error_class:
  description: QMP's error class when QEMU refused the command.
  returned: failed
  type: str
  sample: CommandNotFound
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
from ansible_collections.maqet.vm.plugins.module_utils._qmp import (
    QMP_ARGUMENT_SPEC,
    QMP_EXCLUSIVE,
    QMP_REQUIRED_ONE_OF,
    run_qmp,
)


def main():
    module = AnsibleModule(
        argument_spec=QMP_ARGUMENT_SPEC,
        mutually_exclusive=QMP_EXCLUSIVE,
        required_one_of=QMP_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    run_qmp(module)


if __name__ == "__main__":
    main()
