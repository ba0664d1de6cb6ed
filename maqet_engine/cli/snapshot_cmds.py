"""``maqet snapshot NAME create|revert|delete|list [DRIVE] [SNAP]``: thin over the
engine's ``snapshot``/``list_snapshots`` (the calls the ``maqet_snapshot`` module makes).

The verbs map to the snapshot's desired state (docs/glossary.md): create -> present,
revert -> reverted, delete -> absent. ``load`` is the old spelling of ``revert``.
Without DRIVE a snapshot is VM-wide: every qcow2 disk, plus RAM and device state when
the VM runs. With DRIVE it is that disk only.
"""

from __future__ import annotations

import argparse
import sys
import time

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.definition_cmds import seconds
from maqet_engine.cli.output import human_size, table
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_STATE_OF = {"create": "present", "delete": "absent", "revert": "reverted",
             "load": "reverted"}


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    snap = subparsers.add_parser(
        "snapshot", parents=[common], help="create, revert to, delete or list snapshots",
        description="Snapshots of a VM. Without DRIVE: VM-wide (every qcow2 disk; with RAM "
        "and device state while the VM runs). With DRIVE: that disk only. 'create' of an "
        "existing snapshot and 'delete' of a missing one change nothing; 'revert' always "
        "does ('load' is its old name).",
        epilog="examples: maqet snapshot vm1 create before-upgrade --retention 3 | "
        "maqet snapshot vm1 revert before-upgrade | maqet snapshot vm1 list hdd --json")
    snap.add_argument("name", help="VM name")
    snap.add_argument("action", choices=("create", "revert", "delete", "list", "load"),
                      metavar="{create,revert,delete,list}")
    snap.add_argument("operands", nargs="*", metavar="[DRIVE] SNAP",
                      help="create/load/delete: [DRIVE] SNAP; list: [DRIVE]")
    snap.add_argument("--retention", type=int, metavar="N",
                      help="with create: keep only the N newest snapshots (deletes older)")
    snap.add_argument("--timeout", type=seconds, default=C.SNAPSHOT_JOB_TIMEOUT_S,
                      help="seconds one snapshot operation may take (default %(default)s)")
    snap.add_argument("--check", action="store_true",
                      help="report what would change; do nothing")
    snap.set_defaults(handler=cmd_snapshot)


def cmd_snapshot(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.progress import tty_progress
    from maqet_engine.engine import list_snapshots, snapshot

    operands = list(args.operands)
    if args.action == "list":
        if len(operands) > 1:
            raise UsageError("list takes at most one operand, DRIVE")
        drive = operands[0] if operands else None
        snapshots = list_snapshots(ctx.engine(), args.name, drive).data
        ctx.emit(snapshots, render_list(args.name, drive, snapshots))
        return C.EXIT_OK
    if len(operands) not in (1, 2):
        raise UsageError(f"{args.action} needs SNAP, or DRIVE SNAP",
                         hint=f"e.g. maqet snapshot {args.name} {args.action} before-upgrade")
    drive, name = (None, operands[0]) if len(operands) == 1 else operands
    if args.retention is not None and args.action != "create":
        raise UsageError("--retention goes with create")
    result = snapshot(ctx.engine(check_mode=args.check), args.name, name,
                      state=_STATE_OF[args.action], drive=drive, retention=args.retention,
                      timeout=args.timeout, progress=tty_progress(ctx.json, sys.stderr))
    if result.actions:
        human = f"{args.name}: changed ({'; '.join(result.describe())})"
    else:
        what = "exists" if args.action == "create" else "does not exist"
        human = f"{args.name}: unchanged (snapshot {name} {what})"
    ctx.emit(result.to_dict(), human)
    return C.EXIT_OK


def render_list(vm: str, drive: str | None, snapshots: list[dict[str, Any]]) -> str:
    if not snapshots:
        where = f"disk {drive} of VM {vm}" if drive else f"VM {vm}"
        return f"no snapshots of {where}"
    rows = []
    for s in snapshots:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created"]))
        ram = human_size(s["vm_state_size"]) if s["vm_state"] else "-"
        drives = ",".join(s["drives"]) + ("" if s["complete"] else " (incomplete)")
        rows.append((s["name"], drives, ram, created, f"{s['vm_clock']:.1f}s"))
    return table(("NAME", "DISKS", "RAM STATE", "CREATED", "VM CLOCK"), rows)
