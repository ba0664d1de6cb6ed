# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Descriptions of the attributes every maqet module declares; each module sets
    # support (and details) itself.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and returns the change it predicts without
      modifying anything.
  diff_mode:
    description: Returns details of what changed (or would change in check mode) in
      diff mode.
  idempotent:
    description: Running the task again with the same options reports no change.
  action_group:
    description: Part of the C(maqet.vm.maqet) action group, so C(module_defaults)
      can set O(maqet_home) for all maqet modules at once.
    support: full
    membership:
      - maqet.vm.maqet
"""
