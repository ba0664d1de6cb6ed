#!/usr/bin/python
# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: maqet_console
short_description: Talk to a running VM's serial console, wait for its answer, return it
version_added: 0.1.0
description:
  - Writes O(text) to the VM's serial console (the guest reads it as typed on its serial
    line), waits until the regular expression O(wait) appears on the console, and
    returns what the console printed in between (RV(output)).
  - Without O(text), waits for O(wait) in what the console printed since the start of
    this boot (the VM's start, or the guest's last reset), or since O(since).
  - Console text is matched line by line with terminal escape sequences removed; the
    output has them removed too, and C(\r\n) line ends become C(\n).
  - Through the VM's runner, which reads the serial console all the time, so nothing
    is lost between tasks, and nothing is read from the serial log file.
author:
  - maqet developers (@maqet)
extends_documentation_fragment:
  - maqet.vm.common
  - maqet.vm.attributes
attributes:
  check_mode:
    support: full
    details:
      - O(text) is not sent (the task reports a change and waits for nothing); a wait
        without O(text) runs (it only reads).
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: Waiting only reads; writing O(text) changes the guest every time.
options:
  vm:
    description: Name of the VM; it must be running.
    type: str
    required: true
    aliases:
      - name
  text:
    description:
      - Text to write to the serial console; end a command with C(\n).
      - Up to 64 KiB (the runner's request limit).
    type: str
  wait:
    description:
      - Regular expression (Python syntax) to wait for on the console after O(text)
        was written (or after O(since), or since the start of this boot).
    type: str
  since:
    description:
      - Console offset to look from (RV(offset) of an earlier task continues after its
        match). Default where O(text) was written, or without O(text) the start of this
        boot.
    type: int
  timeout:
    description: Seconds to wait for O(wait).
    type: float
    default: 60
seealso:
  - module: maqet.vm.maqet_vm
  - module: maqet.vm.maqet_qmp
    description: Typing on the VM's keyboard instead (O(maqet.vm.maqet_qmp#module:text)).
"""

EXAMPLES = r"""
- name: Wait for the login prompt of this boot
  maqet.vm.maqet_console:
    vm: web1
    wait: "login:"
    timeout: 120

- name: Run a command on the serial console shell and collect what it printed
  maqet.vm.maqet_console:
    vm: web1
    text: "uname -r; echo END-$((40+2))\n"
    wait: "^END-42$"
  register: uname

- ansible.builtin.debug:
    msg: "{{ uname.output_lines }}"

- name: Continue after the previous match
  maqet.vm.maqet_console:
    vm: web1
    wait: "^next thing$"
    since: "{{ uname.offset }}"
"""

RETURN = r"""
sent:
  description: Bytes of O(text) written to the guest's serial line.
  returned: when O(text) is given, not in check mode
  type: int
  sample: 33
match:
  description: The text that matched O(wait).
  returned: when O(wait) is given, not in check mode with O(text)
  type: str
  sample: END-42
offset:
  description: Console offset right after the matching line; O(since) of a next task.
  returned: when O(wait) is given, not in check mode with O(text)
  type: int
  sample: 5120
since:
  description: Console offset where RV(output) begins.
  returned: when O(wait) is given, not in check mode with O(text)
  type: int
  sample: 5071
output:
  description:
    - What the console printed from where the task looked (O(since), or where O(text)
      was written, or the start of this boot) to the end of the matching line,
      escape sequences removed; the echo of O(text) when the guest echoes it.
    - At most the last 128 Ki characters (RV(truncated) says when more was printed).
  returned: when O(wait) is given, not in check mode with O(text)
  type: str
  sample: "uname -r; echo END-$((40+2))\n6.1.0-28-cloud-amd64\nEND-42\n"
output_lines:
  description: RV(output) split into lines.
  returned: when O(wait) is given, not in check mode with O(text)
  type: list
  elements: str
truncated:
  description: RV(output) is the end of a longer text (or the runner no longer had its
    beginning).
  returned: when O(wait) is given, not in check mode with O(text)
  type: bool
  sample: false
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
from ansible_collections.maqet.vm.plugins.module_utils._console import (
    CONSOLE_ARGUMENT_SPEC,
    CONSOLE_REQUIRED_ONE_OF,
    run_console,
)


def main():
    module = AnsibleModule(
        argument_spec=CONSOLE_ARGUMENT_SPEC,
        required_one_of=CONSOLE_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    run_console(module)


if __name__ == "__main__":
    main()
