"""Commands about definitions: add, apply, ls, show, rm."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.output import human_size, key_values, table
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from maqet_engine.engine import Result

# The desired states (the engine's STATES, spelled here so that --help does not
# import the engine's API; a unit test keeps them equal).
STATES = ("present", "running", "paused", "stopped", "restarted", "absent")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add = subparsers.add_parser("add", parents=[common], help="define a VM from YAML files",
                                description="Define a VM. An identical existing definition "
                                "is a no-op; a different one is an error (use apply).")
    _definition_options(add, required=True)
    add.set_defaults(handler=cmd_add)

    apply = subparsers.add_parser("apply", parents=[common], help="converge a VM to a state",
                                  description="Converge a VM to the desired state and "
                                  "report what changed.")
    _definition_options(apply, required=False)
    apply.add_argument("--state", default="present", choices=STATES)
    apply.add_argument("--recreate", action="store_true",
                       help="restart a running VM whose definition changed")
    apply.add_argument("--timeout", type=seconds, default=C.STOP_TIMEOUT_S,
                       help="seconds to wait for a graceful stop (default %(default)s)")
    apply.add_argument("--force", action="store_true",
                       help="stop without waiting for the guest: QMP quit, then SIGKILL")
    apply.add_argument("--purge", action="store_true",
                       help="with --state absent: delete the VM's directory and created disks")
    apply.add_argument("--check", action="store_true", help="report what would change; do nothing")
    apply.add_argument("--diff", action="store_true",
                       help="show the run status and definition before and after")
    apply.set_defaults(handler=cmd_apply)

    ls = subparsers.add_parser("ls", parents=[common], help="list VMs")
    ls.set_defaults(handler=cmd_ls)

    show = subparsers.add_parser("show", parents=[common], help="show one VM")
    show.add_argument("name")
    show.add_argument("--argv", action="store_true",
                      help="print the QEMU command line (QMP_FD and AGENT_FD stand for the "
                      "numbers of the QMP and guest agent sockets' file descriptors)")
    show.set_defaults(handler=cmd_show)

    rm = subparsers.add_parser("rm", parents=[common], help="remove a VM definition")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true",
                    help="a running VM is stopped first, without waiting for the guest "
                    "(QMP quit, then SIGKILL); without it a running VM is refused")
    rm.add_argument("--timeout", type=seconds, default=C.STOP_TIMEOUT_S,
                    help=argparse.SUPPRESS)
    rm.add_argument("--purge", action="store_true",
                    help="also delete the files maqet created for it (disks, logs); "
                    "disks you supplied are kept")
    rm.add_argument("--missing-ok", action="store_true",
                    help="a VM that does not exist is not an error")
    rm.add_argument("--check", action="store_true",
                    help="report what would be removed or deleted; do nothing")
    rm.set_defaults(handler=cmd_rm)


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0 (``nan``, ``inf``, ``-1``: no)."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _definition_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("-d", "--definition", action="append", type=Path, default=[],
                        dest="files", metavar="FILE",
                        help="YAML definition file; repeat to deep-merge (later wins)"
                        + (" (required)" if required else ""))
    # The first spelling of the option (kept so that scripts do not break).
    parser.add_argument("-c", "--config", action="append", type=Path, dest="files",
                        help=argparse.SUPPRESS)
    parser.add_argument("--name", help="VM name (overrides the files)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="override one key, e.g. --set memory=1G --set storage.0.size=4G")


def _load(args: argparse.Namespace, ctx: CLIContext) -> Any:
    from maqet_engine.engine import load_definition

    return load_definition(ctx.engine(), files=args.files, name=args.name, sets=args.sets)


def _print_result(ctx: CLIContext, result: Result, *, diff: bool = False) -> None:
    if ctx.json:
        ctx.emit(result.to_dict())
        return
    verb = "changed" if result.changed else "unchanged"
    actions = result.describe()
    lines = [f"{result.name}: {verb}" + (f" ({', '.join(actions)})" if actions else "")]
    if result.restart_required:
        lines.append(f"{result.name}: restart required to apply the new definition "
                     "(apply --recreate, or restart it)")
    if diff and result.changed:
        lines.append(render_diff(result.before, result.after))
    print("\n".join(line for line in lines if line))


def render_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    import difflib
    import json

    def text(value: dict[str, Any] | None) -> list[str]:
        return [] if value is None else json.dumps(value, indent=2, sort_keys=True).splitlines()

    return "\n".join(difflib.unified_diff(text(before), text(after), "before", "after",
                                          lineterm=""))


def cmd_add(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import define

    if not args.files:
        raise UsageError("add needs a definition: -d FILE")
    result = define(ctx.engine(), _load(args, ctx))
    _print_result(ctx, result)
    return C.EXIT_OK


def cmd_apply(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import apply

    spec = _load(args, ctx) if args.files else None
    if spec is None and not args.name:
        raise UsageError("apply needs -d FILE or --name NAME")
    if spec is None and args.sets:
        raise UsageError("--set needs -d FILE: it overrides a definition")
    name = spec.name if spec else args.name
    slow = args.state not in ("present", "absent") and not args.check
    with ctx.progress(f"{args.state} {name}") if slow else contextlib.nullcontext() \
            as transfer:
        result = apply(ctx.engine(check_mode=args.check), spec=spec, name=args.name,
                       state=args.state, recreate=args.recreate, timeout=args.timeout,
                       force=args.force, purge=args.purge, progress=transfer)
    _print_result(ctx, result, diff=args.diff)
    return C.EXIT_OK


def cmd_ls(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import list_vms

    views = list_vms(ctx.engine()).data
    if ctx.json:
        ctx.emit(views)
        return C.EXIT_OK
    rows = []
    for view in views:
        spec = view["spec"]
        rows.append((view["name"], view["status"], spec.get("cpu"),
                     human_size(spec.get("memory")), ",".join(view["tags"])))
    print(table(("NAME", "STATUS", "CPUS", "MEMORY", "TAGS"), rows) if rows else
          "no VMs defined (add one with 'maqet add -d FILE')")
    return C.EXIT_OK


def cmd_show(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.runtime_cmds import describe_ports
    from maqet_engine.engine import show

    view = show(ctx.engine(), args.name).data
    if args.argv:
        ctx.emit(view["argv"], shlex.join(view["argv"]))
        return C.EXIT_OK
    if ctx.json:
        ctx.emit(view)
        return C.EXIT_OK
    spec = view["spec"]
    pairs: list[tuple[str, Any]] = [
        ("name", view["name"]), ("status", view["status"]),
        ("restart required", "yes" if view["restart_required"] else None),
        ("cpus", spec.get("cpu")), ("memory", human_size(spec.get("memory"))),
        ("accel", f"{spec.get('accel')}" + (f" (running: {view['accel']})"
                                            if view["accel"] else "")),
        ("tags", ", ".join(view["tags"])),
        ("storage", ", ".join(f"{s['name']}:{s['type']}" for s in spec.get("storage") or [])),
        ("ports", describe_ports(view["ports"])), ("known_hosts", _known_hosts_text(view)),
        ("networks", ", ".join(_nic_text(n) for n in view.get("networks") or [])),
        ("networks changed", ", ".join(view.get("networks_changed") or [])),
        ("last exit", view["last_exit"]), ("directory", view["paths"]["dir"]),
        ("spec hash", view["spec_hash"][:16]),
    ]
    print(key_values(pairs))
    return C.EXIT_OK


def _known_hosts_text(view: dict[str, Any]) -> str | None:
    """The VM's known_hosts, and the name its guest's keys are under for a guest reached
    at an address of its own (``ssh -o HostKeyAlias=...``)."""
    alias = (view.get("ssh") or {}).get("host_key_alias")
    if view["known_hosts"] is None or not alias:
        return view["known_hosts"]
    return f"{view['known_hosts']} (host key alias {alias})"


def _nic_text(nic: dict[str, Any]) -> str:
    """``lab (segment, 52:54:00:..)``, ``user``, ``wire (link end a, ...)``."""
    if nic["network"] is None:
        return str(nic["type"]) + (f" ({nic['mac']})" if nic["mac"] else "")
    kind = nic["network_type"] or "missing"
    if nic["end"]:
        kind += f" end {nic['end']}"
    if nic["tap"]:
        kind += f", tap {nic['tap']}"
    return f"{nic['network']} ({kind}, {nic['mac']})"


def cmd_rm(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import remove

    result = remove(ctx.engine(check_mode=args.check), args.name, force=args.force,
                    purge=args.purge, missing_ok=args.missing_ok, timeout=args.timeout)
    if not ctx.json and not result.changed:
        print(f"{args.name}: absent")
        return C.EXIT_OK
    _print_result(ctx, result)
    return C.EXIT_OK
