"""``maqet storage ls [--orphaned]`` and ``maqet storage rm --orphaned``: the files
maqet created (registered with their owner VM), and those whose VM is gone."""

from __future__ import annotations

import argparse

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.output import human_size, table
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    storage = subparsers.add_parser("storage", parents=[common],
                                    help="files maqet created: list, clean orphans",
                                    description="Disk images maqet created, with their "
                                    "owner VM. A file is orphaned when its VM was removed "
                                    "without --purge.")
    sub = storage.add_subparsers(dest="storage_command", metavar="COMMAND",
                                 parser_class=type(storage))
    sub.required = True
    ls = sub.add_parser("ls", parents=[common], help="list the files maqet created")
    ls.add_argument("--orphaned", action="store_true", help="only files whose VM is gone")
    ls.set_defaults(handler=cmd_ls)
    rm = sub.add_parser("rm", parents=[common], help="delete orphaned files")
    rm.add_argument("--orphaned", action="store_true", required=True,
                    help="delete the files whose VM is gone (required: the only mode)")
    rm.add_argument("--check", action="store_true", help="list what would be deleted")
    rm.set_defaults(handler=cmd_rm)


def cmd_ls(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import storage_files

    entries = storage_files(ctx.engine(), orphaned=args.orphaned).data
    if not entries:
        human = "no orphaned files" if args.orphaned else "no files created by maqet"
    else:
        human = table(("PATH", "VM", "STORAGE", "ALLOCATED", "STATE"), [
            (e["path"], e["vm"], e["storage"], human_size(e["allocated"]),
             "orphaned" if e["orphaned"] else ("missing" if not e["exists"] else "in use"))
            for e in entries])
    ctx.emit(entries, human)
    return C.EXIT_OK


def cmd_rm(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import purge_orphaned_storage

    if not args.orphaned:  # pragma: no cover - argparse requires it
        raise UsageError("storage rm needs --orphaned")
    result = purge_orphaned_storage(ctx.engine(check_mode=args.check))
    deleted = result.data
    verb = "would delete" if args.check else "deleted"
    human = (f"{verb} {len(deleted)} orphaned file(s):\n" + "\n".join(f"  {p}" for p in deleted)
             if deleted else "no orphaned files")
    ctx.emit({"changed": result.changed, "deleted": deleted, "check_mode": args.check,
              "actions": result.actions}, human)
    return C.EXIT_OK
