"""``maqet image ls|pull|rm|prune``: the image cache that disks with ``image:`` start
from. Thin: each is one call of the engine's facade."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.output import human_size, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SHOWN = C.IMAGE_DIGEST_SHOWN


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    image = subparsers.add_parser("image", parents=[common],
                                  help="the image cache: list, pull, remove, prune",
                                  description="Images that disks with 'image:' start from, "
                                  "kept once per content under the data directory. An image "
                                  "a VM uses is never removed.")
    sub = image.add_subparsers(dest="image_command", metavar="COMMAND",
                               parser_class=type(image))
    sub.required = True
    ls = sub.add_parser("ls", parents=[common], help="list the cached images and their VMs")
    ls.set_defaults(handler=cmd_ls)
    pull = sub.add_parser("pull", parents=[common], help="fetch an image into the cache",
                          description="Fetch an image as a VM's start would: download "
                          "(or copy) it once, verify it, keep it by content.")
    pull.add_argument("location", help="path, file:// or http(s):// URL of the image")
    pull.add_argument("--checksum", metavar="sha256:HEX|sha256:URL",
                      help="sha256 digest, or the URL of a SHA256SUMS file (required for "
                      "http(s) images)")
    pull.add_argument("--check", action="store_true",
                      help="say whether it would be fetched; look in the cache only")
    pull.set_defaults(handler=cmd_pull)
    rm = sub.add_parser("rm", parents=[common], help="remove one image no VM uses")
    rm.add_argument("digest", help="the image's digest, or at least 8 of its first hex digits")
    rm.add_argument("--check", action="store_true", help="say what would be removed")
    rm.set_defaults(handler=cmd_rm)
    prune = sub.add_parser("prune", parents=[common], help="remove every image no VM uses")
    prune.add_argument("--check", action="store_true", help="list what would be removed")
    prune.set_defaults(handler=cmd_prune)


def _digest(entry: dict[str, Any]) -> str:
    return f"{C.IMAGE_DIGEST_ALGORITHM}:{entry['digest'][:_SHOWN]}"


def cmd_ls(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import images

    entries = images(ctx.engine()).data
    rows = [(_digest(e), e["format"], human_size(e["size"]), human_size(e["virtual_size"]),
             ", ".join(e["used_by"]), time.strftime("%Y-%m-%d %H:%M",
                                                    time.localtime(e["fetched_at"])),
             e["source"]) for e in entries]
    human = (table(("DIGEST", "FORMAT", "SIZE", "VIRTUAL", "USED BY", "FETCHED", "SOURCE"),
                   rows) if rows else "no cached images")
    ctx.emit(entries, human)
    return C.EXIT_OK


def cmd_pull(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.progress import tty_progress
    from maqet_engine.engine import TTYBar, pull_image

    bar = None
    if not args.check and tty_progress(ctx.json, sys.stderr) is not None:
        bar = TTYBar(sys.stderr, args.location)
    with bar if bar is not None else contextlib.nullcontext():
        result = pull_image(ctx.engine(check_mode=args.check), args.location, args.checksum,
                            progress=bar)
    entry = result.data
    if args.check:
        human = (f"{args.location}: would be fetched" if result.changed else
                 f"{args.location}: cached ({_digest(entry)})")
    else:
        verb = "fetched" if result.changed else "already cached"
        human = (f"{args.location}: {verb} ({_digest(entry)}, {entry['format']}, "
                 f"{human_size(entry['size'])})")
    ctx.emit(result.to_dict(), human)
    return C.EXIT_OK


def cmd_rm(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import remove_image

    result = remove_image(ctx.engine(check_mode=args.check), args.digest)
    verb = "would remove" if args.check else "removed"
    ctx.emit(result.to_dict(), f"{verb} image {_digest(result.data)} ({result.data['source']})")
    return C.EXIT_OK


def cmd_prune(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import prune_images

    result = prune_images(ctx.engine(check_mode=args.check))
    removed = result.data
    verb = "would remove" if args.check else "removed"
    human = (f"{verb} {len(removed)} image(s):\n" + "\n".join(
        f"  {_digest(e)} {human_size(e['size'])} {e['source']}" for e in removed)
             if removed else "no unused images")
    ctx.emit(result.to_dict(), human)
    return C.EXIT_OK
