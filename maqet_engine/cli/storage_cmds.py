"""``maqet storage ls [--orphaned]`` and ``maqet storage rm --orphaned``: the files
maqet created (registered with their owner VM), and those whose VM is gone."""

from __future__ import annotations

import argparse
import os

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


def _entries(ctx: CLIContext, *, orphaned: bool) -> list[dict[str, Any]]:
    from maqet_engine.store import storage_records as records

    with ctx.store() as store:
        orphans = {r.path for r in records.orphaned_files(store)}
        rows = records.orphaned_files(store) if orphaned else records.all_files(store)
    entries = []
    for row in rows:
        data = row.to_dict()
        try:
            stat = os.stat(row.path)
            data.update(exists=True, size=stat.st_size, allocated=stat.st_blocks * 512)
        except OSError:
            data.update(exists=False, size=None, allocated=None)
        data["orphaned"] = row.path in orphans
        entries.append(data)
    return entries


def cmd_ls(args: argparse.Namespace, ctx: CLIContext) -> int:
    entries = _entries(ctx, orphaned=args.orphaned)
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
    from maqet_engine.storage import purge_orphans

    if not args.orphaned:  # pragma: no cover - argparse requires it
        raise UsageError("storage rm needs --orphaned")
    with ctx.store() as store:
        deleted = purge_orphans(ctx.paths, store, check_mode=args.check)
    verb = "would delete" if args.check else "deleted"
    human = (f"{verb} {len(deleted)} orphaned file(s):\n" + "\n".join(f"  {p}" for p in deleted)
             if deleted else "no orphaned files")
    ctx.emit({"changed": bool(deleted), "deleted": [str(p) for p in deleted],
              "check_mode": args.check}, human)
    return C.EXIT_OK
