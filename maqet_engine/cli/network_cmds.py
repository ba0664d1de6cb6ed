"""``maqet network add|apply|ls|show|rm``: named networks that VMs attach to by name
(docs/networks.md). One facade call each."""

from __future__ import annotations

import argparse
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.output import key_values, table
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from maqet_engine.engine import Result

# The engine's NETWORK_STATES, spelled here so that --help stays cheap (a unit test
# keeps them equal).
NETWORK_STATES = ("present", "absent")

# Command-line option -> definition key.
_KEYS = (("type", "type"), ("interface", "interface"), ("group", "group"), ("port", "port"),
         ("ttl", "ttl"), ("end_a", "a"), ("end_b", "b"), ("bridge", "bridge"))


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    network = subparsers.add_parser(
        "network", parents=[common], help="named networks VMs attach to: add, ls, rm",
        description="Named networks: a multicast segment (no privileges; one host, or "
        "several through the interface you name), a point-to-point link between two VMs, "
        "or an existing host bridge (root). VMs attach with a NIC '{network: NAME}'. "
        "See docs/networks.md.")
    sub = network.add_subparsers(dest="network_command", metavar="COMMAND",
                                 parser_class=type(network))
    sub.required = True
    add = sub.add_parser("add", parents=[common], help="define a network",
                         description="Define a network. An identical existing definition "
                         "is a no-op; another one is an error (use apply).")
    _definition_options(add)
    add.set_defaults(handler=cmd_add)
    apply = sub.add_parser("apply", parents=[common], help="converge a network to a state",
                           description="Create, change or remove a network and report what "
                           "changed. VMs running on a changed network need a restart.")
    _definition_options(apply)
    apply.add_argument("--state", default="present", choices=NETWORK_STATES)
    apply.add_argument("--check", action="store_true",
                       help="report what would change; do nothing")
    apply.add_argument("--diff", action="store_true",
                       help="show the definition before and after")
    apply.set_defaults(handler=cmd_apply)
    ls = sub.add_parser("ls", parents=[common], help="list networks and their VMs")
    ls.set_defaults(handler=cmd_ls)
    show = sub.add_parser("show", parents=[common], help="show one network")
    show.add_argument("name")
    show.set_defaults(handler=cmd_show)
    rm = sub.add_parser("rm", parents=[common], help="remove a network",
                        description="Remove a network. Refused (exit 4) while VM "
                        "definitions name it: the error lists them.")
    rm.add_argument("name")
    rm.add_argument("--missing-ok", action="store_true",
                    help="a network that does not exist is not an error")
    rm.add_argument("--check", action="store_true",
                    help="report what would be removed; do nothing")
    rm.set_defaults(handler=cmd_rm)


def _definition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="network name (overrides the file)")
    parser.add_argument("-d", "--definition", action="append", type=Path, default=[],
                        dest="files", metavar="FILE",
                        help="YAML network definition; repeat to deep-merge (later wins)")
    parser.add_argument("--type", choices=C.NETWORK_KINDS,
                        help="segment (multicast, default interface lo), link (two VMs) or "
                        "bridged (an existing host bridge, root)")
    parser.add_argument("--interface", help="segment: host interface that carries it "
                        "(default lo: this host only)")
    parser.add_argument("--group", help="segment: multicast group (default: derived from "
                        "the name, 239.255.X.Y)")
    parser.add_argument("--port", help="segment: UDP port (default: derived from the name)")
    parser.add_argument("--ttl", help="segment: IP TTL of its packets (default 1)")
    parser.add_argument("--end-a", metavar="ADDRESS[:PORT]",
                        help="link: end a (default 127.0.0.1 and a port derived from the "
                        "name)")
    parser.add_argument("--end-b", metavar="ADDRESS[:PORT]", help="link: end b")
    parser.add_argument("--bridge", help="bridged: the host bridge")


def _load(args: argparse.Namespace, ctx: CLIContext) -> Any:
    from maqet_engine.engine import load_network

    definition = {key: getattr(args, option) for option, key in _KEYS
                  if getattr(args, option) is not None}
    if not args.files and not args.name:
        raise UsageError("a network needs a NAME (or -d FILE)")
    return load_network(ctx.engine(), definition=definition, files=args.files,
                        name=args.name)


def _print_result(ctx: CLIContext, result: Result, *, diff: bool = False) -> None:
    if ctx.json:
        ctx.emit(result.to_dict())
        return
    actions = result.describe()
    lines = [f"network {result.name}: " + (f"changed ({', '.join(actions)})"
                                            if result.changed else "unchanged")]
    data = result.data or {}
    running = [vm["vm"] for vm in data.get("vms", []) if vm.get("restart_required")]
    if result.restart_required and running:
        lines.append(f"network {result.name}: VM(s) {', '.join(running)} run with its old "
                     "definition: restart them (or apply them with --recreate)")
    if diff and result.changed:
        from maqet_engine.cli.definition_cmds import render_diff

        lines.append(render_diff(result.before, result.after))
    print("\n".join(line for line in lines if line))


def cmd_add(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import define_network

    _print_result(ctx, define_network(ctx.engine(), _load(args, ctx)))
    return C.EXIT_OK


def cmd_apply(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import apply_network

    engine_ctx = ctx.engine(check_mode=args.check)
    if args.state == "absent":
        if args.files or not args.name:
            raise UsageError("apply --state absent takes a NAME only")
        result = apply_network(engine_ctx, name=args.name, state="absent")
    else:
        result = apply_network(engine_ctx, _load(args, ctx), state="present")
    _print_result(ctx, result, diff=args.diff)
    return C.EXIT_OK


def cmd_ls(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import list_networks

    views = list_networks(ctx.engine()).data
    if ctx.json:
        ctx.emit(views)
        return C.EXIT_OK
    rows = [(v["name"], v["type"], v["summary"],
             ", ".join(f"{vm['vm']}{'*' if vm['restart_required'] else ''}"
                       for vm in v["vms"]))
            for v in views]
    print(table(("NAME", "TYPE", "WHERE", "VMS"), rows) if rows else
          "no networks defined (add one with 'maqet network add NAME --type segment')")
    if any(vm["restart_required"] for v in views for vm in v["vms"]):
        print("* runs with an older definition of the network: restart it")
    return C.EXIT_OK


def cmd_show(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import show_network

    view = show_network(ctx.engine(), args.name).data
    if ctx.json:
        ctx.emit(view)
        return C.EXIT_OK
    spec = view["spec"]
    pairs: list[tuple[str, Any]] = [("name", view["name"]), ("type", view["type"]),
                                    ("where", view["summary"])]
    pairs += [(key, spec[key]) for key in sorted(spec) if key not in ("name", "type")]
    for vm in view["vms"]:
        detail = f"{vm['mac']}, NIC {vm['nic']}, {vm['status']}"
        if vm["end"]:
            detail += f", end {vm['end']}"
        if vm["restart_required"]:
            detail += ", restart required"
        pairs.append((f"vm {vm['vm']}", detail))
    print(key_values(pairs))
    return C.EXIT_OK


def cmd_rm(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import remove_network

    result = remove_network(ctx.engine(check_mode=args.check), args.name,
                            missing_ok=args.missing_ok)
    if not ctx.json and not result.changed:
        print(f"network {args.name}: absent")
        return C.EXIT_OK
    _print_result(ctx, result)
    return C.EXIT_OK
