"""Run-state commands: start, stop, restart, pause, resume, status, logs, and the QMP
helpers qmp, keys, type, wait, screendump. Thin: each is one call of the engine's
facade (``maqet_engine.engine``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.definition_cmds import seconds
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    def add(name: str, help_text: str, handler: Any, **kwargs: Any) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, parents=[common], help=help_text,
                                       description=kwargs.pop("description", help_text[:1]
                                                              .upper() + help_text[1:] + "."))
        parser.add_argument("name", help="VM name")
        parser.set_defaults(handler=handler)
        return parser

    add("start", "start a VM (or re-adopt its QEMU if only the runner died)", cmd_start)
    for name, text, handler in (("stop", "stop a VM: ACPI powerdown, then quit, then kill",
                                 cmd_stop),
                                ("restart", "stop (as 'stop') and start again", cmd_restart)):
        parser = add(name, text, handler)
        parser.add_argument("--timeout", type=seconds, default=C.STOP_TIMEOUT_S,
                            help="seconds the guest gets to power off (default %(default)s)")
        parser.add_argument("--force", action="store_true",
                            help="do not wait for the guest: QMP quit, then SIGKILL")
    add("pause", "pause a running VM's vCPUs", cmd_pause)
    add("resume", "resume a paused VM", cmd_resume)
    add("status", "run state: runner, QEMU, accelerator, last exit", cmd_status)

    logs = add("logs", "show a VM's serial console log (or --qemu / --runner)", cmd_logs)
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--serial", dest="log", action="store_const", const="serial",
                       help="the guest's serial console (default)")
    which.add_argument("--qemu", dest="log", action="store_const", const="qemu",
                       help="QEMU's own stdout/stderr")
    which.add_argument("--runner", dest="log", action="store_const", const="runner",
                       help="the runner's log")
    logs.add_argument("-n", "--lines", type=int, default=None,
                      help="only the last N lines")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    logs.set_defaults(log="serial")

    qmp = add("qmp", "run one QMP command and print its JSON result", cmd_qmp)
    qmp.add_argument("command", help="QMP command, e.g. query-status")
    qmp.add_argument("--args", dest="args_json", metavar="JSON",
                     help='arguments as one JSON object, e.g. \'{"id": "net0"}\'')
    qmp.add_argument("pairs", nargs="*", metavar="KEY=VALUE",
                     help="arguments one by one; VALUE is JSON when it parses, else a string")

    keys = add("keys", "press key chords, e.g. ctrl-alt-delete ret", cmd_keys)
    keys.add_argument("keys", nargs="+", metavar="KEY")
    typ = add("type", "type text on the VM's keyboard (US layout; \\n is Enter)", cmd_type)
    typ.add_argument("text")
    wait = add("wait", "wait for the guest: a regex on its console, its SSH server, its "
               "agent", cmd_wait,
               description="Wait, counting from the start of this boot, until PATTERN (a "
               "regular expression, matched per line with terminal escapes stripped) appears "
               "on the VM's serial console, and/or (--ssh) until the guest's SSH server "
               "answers through the VM's forward to its SSH port and, for a cloud-init "
               "guest, its host keys are in the VM's known_hosts, and/or (--agent) until "
               "the guest agent answers on the VM's agent channel; in that order.")
    wait.add_argument("pattern", nargs="?", help="regex on the console (as --console)")
    wait.add_argument("--console", metavar="REGEX", help="regex on the console")
    wait.add_argument("--ssh", action="store_true",
                      help="the guest's SSH banner (and host keys: see 'maqet show')")
    wait.add_argument("--agent", action="store_true",
                      help="the guest agent answers (exit 7 when it does not in time)")
    wait.add_argument("--timeout", type=seconds, default=None,
                      help=f"seconds to wait for everything (default "
                      f"{C.SERIAL_WAIT_TIMEOUT_S:g}, with --ssh or --agent "
                      f"{C.SSH_WAIT_TIMEOUT_S:g})")
    wait.add_argument("--since", type=int, default=None, metavar="OFFSET",
                      help="console text after this offset only (printed by an earlier "
                      "wait) instead of this boot's")
    shot = add("screendump", "save the VM's screen as PNG", cmd_screendump)
    shot.add_argument("output", type=Path, help="PNG file (relative to your directory)")


# --- start / stop ---------------------------------------------------------------------------
_DOING = {"start": "starting", "stop": "stopping", "restart": "restarting"}


def _run_state(args: argparse.Namespace, ctx: CLIContext, verb: str, unchanged: str) -> int:
    from maqet_engine import engine

    extra = {"timeout": args.timeout, "force": args.force} if verb != "start" else {}
    with ctx.progress(f"{_DOING[verb]} {args.name}") as transfer:
        if verb != "stop":  # a start may download a disk's image
            extra["progress"] = transfer
        result = getattr(engine, verb)(ctx.engine(), args.name, **extra)
    _emit_actions(ctx, result, unchanged)
    return C.EXIT_OK


def _emit_actions(ctx: CLIContext, result: Any, unchanged: str) -> None:
    actions = result.describe()
    ctx.emit(result.to_dict(), f"{result.name}: {', '.join(actions) if actions else unchanged}")


def cmd_start(args: argparse.Namespace, ctx: CLIContext) -> int:
    return _run_state(args, ctx, "start", "already running")


def cmd_stop(args: argparse.Namespace, ctx: CLIContext) -> int:
    return _run_state(args, ctx, "stop", "already stopped")


def cmd_restart(args: argparse.Namespace, ctx: CLIContext) -> int:
    return _run_state(args, ctx, "restart", "restarted")


def cmd_pause(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import pause

    _emit_actions(ctx, pause(ctx.engine(), args.name), "already paused")
    return C.EXIT_OK


def cmd_resume(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import resume

    _emit_actions(ctx, resume(ctx.engine(), args.name), "already running")
    return C.EXIT_OK


# --- status and logs ----------------------------------------------------------------------
def describe_ports(ports: list[dict[str, Any]]) -> str:
    """``127.0.0.1:40022->22 (auto)`` for each forward (``auto`` before the VM runs)."""
    return ", ".join(
        f"{p.get('host_address')}:{p['host'] if p['host'] is not None else 'auto'}"
        f"->{p['guest']}" + ("/udp" if p.get("protocol") == "udp" else "")
        + (" (auto)" if p.get("auto") and p["host"] is not None else "") for p in ports)


def cmd_status(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.output import key_values
    from maqet_engine.engine import status

    view = status(ctx.engine(), args.name).data
    if ctx.json:
        ctx.emit(view)
        return C.EXIT_OK
    runner = (f"alive (pid {view['runner_pid']})" if view["runner_alive"] else
              "gone; QEMU still runs: 'maqet start' re-adopts it" if view["qemu_alive"] else
              "not running")
    pairs = [("name", args.name), ("status", view["status"]),
             ("qmp status", view.get("qmp_status")), ("runner", runner),
             ("qemu pid", view["qemu_pid"] if view["qemu_alive"] else None),
             ("accel", view["accel"]), ("ports", describe_ports(view["ports"])),
             ("known_hosts", view["known_hosts"]), ("agent", _agent_line(view.get("agent"))),
             ("last exit", view["last_exit"])]
    if view["status"] != view["recorded_status"]:
        pairs.append(("note", view["reason"]))
    print(key_values(pairs))
    return C.EXIT_OK


def _agent_line(agent: dict[str, Any] | None) -> str | None:
    """``connected (synced 12:00:03)``, ``absent (why)``, ...; None: no agent channel."""
    if not agent:
        return None
    import time

    line = agent["state"]
    if agent.get("last_sync"):
        line += f" (synced {time.strftime('%H:%M:%S', time.localtime(agent['last_sync']))})"
    if agent.get("reason"):
        line += f"; {agent['reason']}"
    return line


def cmd_logs(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import log_path, read_log

    path = log_path(ctx.engine(), args.name, args.log)
    if not path.exists() and not args.follow:
        print(f"{args.name}: no {args.log} log yet ({path})", file=sys.stderr)
        return C.EXIT_OK
    out = sys.stdout.buffer
    for chunk in read_log(ctx.engine(), args.name, args.log, lines=args.lines,
                          follow=args.follow):
        out.write(chunk)
        out.flush()
    return C.EXIT_OK


# --- QMP helpers ------------------------------------------------------------------------------
def parse_qmp_arguments(args_json: str | None, pairs: list[str]) -> dict[str, Any]:
    """``--args JSON`` and/or ``key=value`` words (value: JSON if it parses, else text)."""
    arguments: dict[str, Any] = {}
    if args_json:
        try:
            loaded = json.loads(args_json)
        except json.JSONDecodeError as err:
            raise UsageError(f"--args is not valid JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise UsageError("--args must be a JSON object")
        arguments.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad argument {pair!r}", hint="write key=value")
        try:
            arguments[key] = json.loads(value)
        except json.JSONDecodeError:
            arguments[key] = value
    return arguments


def cmd_qmp(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import qmp

    arguments = parse_qmp_arguments(args.args_json, args.pairs)
    result = qmp(ctx.engine(), args.name, args.command, arguments)
    json.dump(result.data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return C.EXIT_OK


def cmd_keys(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import send_keys

    ctx.emit(send_keys(ctx.engine(), args.name, args.keys).data, None)
    return C.EXIT_OK


def cmd_type(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import type_text

    ctx.emit(type_text(ctx.engine(), args.name, args.text.replace("\\n", "\n")).data, None)
    return C.EXIT_OK


def cmd_wait(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import wait_ready

    if args.pattern is not None and args.console is not None:
        raise UsageError("give the console pattern once: PATTERN or --console")
    console = args.console if args.console is not None else args.pattern
    if console is None and not args.ssh and not args.agent:
        raise UsageError("nothing to wait for", hint="give a PATTERN (or --console REGEX), "
                         "--ssh and/or --agent")
    timeout = args.timeout if args.timeout is not None else (
        C.SSH_WAIT_TIMEOUT_S if args.ssh or args.agent else C.SERIAL_WAIT_TIMEOUT_S)
    what = " and ".join(([repr(console)] if console is not None else [])
                        + (["SSH"] if args.ssh else [])
                        + (["the guest agent"] if args.agent else []))
    with ctx.progress(f"waiting for {what} on {args.name}"):
        found = wait_ready(ctx.engine(), args.name, console=console, ssh=args.ssh,
                           agent=args.agent, timeout=timeout,
                           since="boot" if args.since is None else args.since).data
    lines = []
    if "console" in found:
        lines.append(f"{args.name}: {found['console']['match']} "
                     f"(offset {found['console']['offset']})")
    if "ssh" in found:
        ssh = found["ssh"]
        lines.append(f"{args.name}: {ssh['banner']} at {ssh['host']}:{ssh['port']}"
                     + (f"; known_hosts {ssh['known_hosts']}" if ssh["known_hosts"] else
                        "; no host keys on its console (not in known_hosts)"))
    if "agent" in found:
        lines.append(f"{args.name}: guest agent answers (qemu-ga {found['agent']['version']})")
    # A console-only wait prints {"match", "offset"} as it always did.
    ctx.emit(found["console"] if not (args.ssh or args.agent) else found, "\n".join(lines))
    return C.EXIT_OK


def cmd_screendump(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import screendump

    result = screendump(ctx.engine(), args.name, args.output)
    ctx.emit(result.data, result.data["path"])
    return C.EXIT_OK
