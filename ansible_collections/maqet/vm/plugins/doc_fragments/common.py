# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Options every maqet module shares. Paired with COMMON_ARGUMENT_SPEC in
    # plugins/module_utils/_engine.py: change both together.
    DOCUMENTATION = r"""
options:
  maqet_home:
    description:
      - Directory that holds one whole maqet installation (state store, VM
        directories, sockets), like the E(MAQET_HOME) environment variable.
      - When not set, the module uses E(MAQET_HOME) of its environment, or the XDG
        directories of the user that runs it.
    type: path
  op_id:
    description:
      - The operation id of this task. The events the task causes, the runner's log lines
        while it handles the task's requests and the engine's decision lines carry it,
        and C(maqet events --op ID) on the hypervisor host shows that trail. The task
        returns it as C(op_id), also when it fails.
      - When not set, the module makes one for this task (12 hex digits).
      - Give several tasks the same id (for example through C(module_defaults) for the
        C(maqet.vm.maqet) action group) to follow them as one operation.
      - 1-64 characters, letters, digits, V(_), V(.), V(:) and V(-), starting with a
        letter or digit.
    type: str
requirements:
  - maqet_engine (C(pip install maqet)) in the Python interpreter that runs the module
    on the hypervisor host
notes:
  - Modules run on the hypervisor host, which is usually C(localhost). For hosts from
    an inventory, point C(ansible_python_interpreter) at the Python that has maqet
    installed.
"""
