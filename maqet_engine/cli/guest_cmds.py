"""Commands into the guest: exec, cp and guest-info through the guest agent (a VM with
``agent: true``), and console, the serial console attached to this terminal. Each is
one facade call (``maqet_engine.engine``); see docs/guest-agent.md."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import sys
import time

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.definition_cmds import seconds
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# NAME:/path names a file in a guest (guest paths are absolute); anything else is local
# (write ./vm:/x for a local file of that name).
_REMOTE = re.compile(r"(?P<vm>" + C.VM_NAME_RE.pattern + r"):(?P<path>/.*)", re.DOTALL)


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    agent_timeout = _agent_timeout
    run = subparsers.add_parser(
        "exec", parents=[common], help="run a command in the guest (guest agent)",
        usage="maqet exec NAME [--timeout S] [--agent-timeout S] [--env KEY=VALUE] "
              "[--cwd DIR] [-n] -- CMD [ARG...]",
        description="Run CMD in the guest through its agent (qemu-ga), wait for it, print "
        "its output and exit with its exit code (128+N when signal N ended it). stdin is "
        "sent to it when it is not a terminal (read to its end first; -n sends none). "
        "Exit 7 when the agent does not answer within --agent-timeout. maqet's options "
        "may come before or after NAME; end them with -- before CMD.")
    _exec_options(run)
    run.add_argument("words", nargs=argparse.REMAINDER, metavar="NAME [...] -- CMD [ARG...]",
                     help="the VM, then the command and its arguments")
    run.set_defaults(handler=cmd_exec)

    copy = subparsers.add_parser(
        "cp", parents=[common], help="copy a file into or out of a guest (guest agent)",
        description="Copy SRC to DST, one of them NAME:/PATH in a guest (absolute; a DST "
        "ending in / is a directory). Binary safe; the permission bits are kept and the "
        "copy is checked with sha256 on both sides (sha256sum in the guest, or reading "
        "back). A local DST that is a directory gets SRC's file name.")
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("dest", metavar="DST")
    agent_timeout(copy)
    copy.add_argument("--no-verify", dest="verify", action="store_false",
                      help="do not compare checksums")
    copy.add_argument("--no-preserve", dest="preserve", action="store_false",
                      help="do not copy the permission bits")
    copy.set_defaults(handler=cmd_cp)

    info = subparsers.add_parser(
        "guest-info", parents=[common], help="what the guest agent reports: OS, host name, "
        "addresses, filesystems", description="The guest's OS, host name, network "
        "interfaces with their addresses and filesystems, as its agent reports them.")
    info.add_argument("name", help="VM name")
    agent_timeout(info)
    info.set_defaults(handler=cmd_guest_info)

    console = subparsers.add_parser(
        "console", parents=[common], help="attach this terminal to the serial console",
        description="Attach to the VM's serial console: what the guest writes appears "
        "here, what you type goes to it (raw terminal). Ctrl-] detaches. Several clients "
        "may watch; one at a time types (the others are attached read-only).")
    console.add_argument("name", help="VM name")
    console.add_argument("--read-only", action="store_true", help="watch without typing")
    console.set_defaults(handler=cmd_console)


# --- exec ------------------------------------------------------------------------------------
def _agent_timeout(parser: argparse.ArgumentParser, default: Any = C.AGENT_TIMEOUT_S) -> None:
    parser.add_argument("--agent-timeout", type=positive_seconds, default=default,
                        metavar="S", help="seconds the guest agent gets to answer, and to "
                        f"come up in a guest still booting (default {C.AGENT_TIMEOUT_S:g}); "
                        "exit 7 after")


def _exec_options(parser: argparse.ArgumentParser, *, after_name: bool = False) -> None:
    """exec's options; ``after_name``: as parsed between NAME and ``--`` (defaults
    suppressed, so that they do not undo the ones given before NAME)."""
    keep = argparse.SUPPRESS if after_name else None
    parser.add_argument("--timeout", type=positive_seconds, default=keep, metavar="S",
                        help="seconds the command may run (default: as long as it runs); "
                        "after that: exit 5, and it goes on in the guest")
    _agent_timeout(parser, default=keep if after_name else C.AGENT_TIMEOUT_S)
    parser.add_argument("--env", action="append", default=keep if after_name else [],
                        metavar="KEY=VALUE",
                        help="add a variable to the command's environment (repeatable)")
    parser.add_argument("--cwd", default=keep, metavar="DIR",
                        help="the command's working directory")
    parser.add_argument("-n", "--no-stdin", action="store_true",
                        default=keep if after_name else False,
                        help="send no stdin (the command reads end-of-file)")


def split_exec_words(args: argparse.Namespace) -> tuple[str, list[str]]:
    """NAME and the command from ``maqet exec``'s words: options between NAME and ``--``
    are maqet's (merged into ``args``); without options, the command may follow NAME
    directly (a ``--`` in it is then the command's own)."""
    from maqet_engine.cli.main import _Parser

    words = list(args.words)
    if not words or words[0].startswith("-"):
        raise UsageError("give the VM's name, then the command after --",
                         hint="maqet exec vm1 -- uname -a")
    name, rest = words[0], words[1:]
    if rest and rest[0].startswith("-") and rest[0] != "--":
        if "--" not in rest:
            raise UsageError("end maqet's options with -- before the command",
                             hint="maqet exec vm1 --cwd /tmp -- ls -l")
        end = rest.index("--")
        options = _Parser(prog="maqet exec", add_help=False)
        _exec_options(options, after_name=True)
        options.parse_args(rest[:end], namespace=args)
        rest = rest[end:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("give the command to run after --", hint="maqet exec vm1 -- uname -a")
    return name, rest


def _environment(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad --env {pair!r}", hint="write KEY=VALUE")
        env[key] = value
    return env


def _read_stdin() -> bytes | None:
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        return None
    data = stdin.buffer.read(C.AGENT_EXEC_MAX_INPUT + 1)
    if len(data) > C.AGENT_EXEC_MAX_INPUT:
        raise UsageError(f"stdin is larger than {C.AGENT_EXEC_MAX_INPUT} bytes, the most the "
                         "guest agent takes", hint="copy it in with maqet cp and redirect "
                         "from the file in the guest")
    return data


def cmd_exec(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import guest_exec

    name, argv = split_exec_words(args)
    stdin = None if args.no_stdin else _read_stdin()
    result = guest_exec(ctx.engine(), name, argv, stdin=stdin,
                        env=_environment(args.env), cwd=args.cwd, timeout=args.timeout,
                        agent_timeout=args.agent_timeout)
    data = result.data
    code = data["exitcode"] if data["exitcode"] is not None else 128 + int(data["signal"] or 0)
    if ctx.json:
        ctx.emit({**data, "stdout": data["stdout"].decode("utf-8", "replace"),
                  "stderr": data["stderr"].decode("utf-8", "replace")})
        return code
    sys.stdout.buffer.write(data["stdout"])
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(data["stderr"])
    sys.stderr.buffer.flush()
    for stream in ("stdout", "stderr"):
        if data[f"{stream}_truncated"]:
            print(f"maqet: warning: the guest agent kept only the first "
                  f"{C.AGENT_EXEC_OUTPUT_CAP // 2**20} MiB of the command's {stream}",
                  file=sys.stderr)
    return code


# --- cp --------------------------------------------------------------------------------------
def split_location(text: str) -> tuple[str | None, str]:
    """``NAME:/path`` -> (NAME, /path); anything else is a local path (None, text)."""
    match = _REMOTE.fullmatch(text)
    if match:
        return match["vm"], match["path"]
    return None, text


def cmd_cp(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.output import human_size
    from maqet_engine.engine import fetch_file, put_file

    src_vm, src = split_location(args.source)
    dst_vm, dst = split_location(args.dest)
    if (src_vm is None) == (dst_vm is None):
        raise UsageError("one of SRC and DST must be NAME:/PATH in a guest, the other local",
                         hint="maqet cp file.txt vm1:/tmp/ or maqet cp vm1:/etc/os-release .")
    name = src_vm or dst_vm
    assert name is not None
    if dst_vm is not None:
        if dst.endswith("/"):
            dst += os.path.basename(src)
        where = f"{name}:{dst}"
        with ctx.progress(f"copying to {where}", noun="copied") as transfer:
            result = put_file(ctx.engine(), name, src, dst,
                              mode="preserve" if args.preserve else None, verify=args.verify,
                              progress=transfer, agent_timeout=args.agent_timeout)
    else:
        if os.path.isdir(dst):
            dst = os.path.join(dst, os.path.basename(src.rstrip("/")))
        where = dst
        with ctx.progress(f"copying {name}:{src}", noun="copied") as transfer:
            result = fetch_file(ctx.engine(), name, src, dst, preserve_mode=args.preserve,
                                verify=args.verify, progress=transfer,
                                agent_timeout=args.agent_timeout)
    action = result.actions[0]
    took = max(float(action.get("seconds") or 0), 1e-6)
    rate = human_size(int(action["size"] / took))
    detail = [f"{human_size(action['size'])} in {took:.2f} s ({rate}/s)"]
    if action.get("mode"):
        detail.append(f"mode {action['mode']}")
    detail.append(f"sha256 verified ({action['verified']})" if action.get("verified")
                  else "not verified")
    ctx.emit(result.to_dict(), f"{where}: {', '.join(detail)}")
    return C.EXIT_OK


# --- guest-info ------------------------------------------------------------------------------
def cmd_guest_info(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.cli.output import key_values
    from maqet_engine.engine import guest_info

    data = guest_info(ctx.engine(), args.name, agent_timeout=args.agent_timeout).data
    if ctx.json:
        ctx.emit(data)
        return C.EXIT_OK
    os_info = data.get("os") or {}
    pairs: list[tuple[str, Any]] = [
        ("os", os_info.get("pretty-name") or os_info.get("name")),
        ("kernel", " ".join(str(v) for v in (os_info.get("kernel-release"),
                                             os_info.get("machine")) if v) or None),
        ("hostname", data.get("hostname")),
        ("agent", f"qemu-ga {data['agent'].get('version')}"),
    ]
    for iface in data.get("interfaces") or []:
        pairs.append((f"interface {iface['name']}",
                      " ".join(iface["addresses"]) or "(no address)"))
    for fs in data.get("filesystems") or []:
        used, total = fs.get("used-bytes"), fs.get("total-bytes")
        size = f" {used * 100 // total}% of {total // 2**20} MiB" if used and total else ""
        pairs.append((f"filesystem {fs.get('mountpoint')}", f"{fs.get('type')}{size}"))
    print(key_values(pairs))
    return C.EXIT_OK


# --- console ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _raw_terminal(fd: int) -> Any:
    """The terminal in raw mode (keys as they are typed, Ctrl-C to the guest), restored
    at the end; nothing when ``fd`` is not a terminal."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def cmd_console(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine.engine import console

    session = console(ctx.engine(), args.name, write=not args.read_only)
    detach = bytes([C.CONSOLE_DETACH_BYTE])
    note = "typing" if session.writes else (
        "read-only" if args.read_only else
        f"read-only: pid {session.writer_pid} is typing")
    print(f"maqet: attached to {args.name}'s console ({note}); Ctrl-] detaches",
          file=sys.stderr, flush=True)
    stdin_fd = sys.stdin.fileno()
    out = sys.stdout.buffer
    reading_stdin = True
    started = time.monotonic()
    with session, _raw_terminal(stdin_fd):
        while True:
            if not session.pending():
                watched = [session] + ([stdin_fd] if reading_stdin else [])
                ready, _, _ = select.select(watched, [], [])
            else:
                ready = [session]
            if session in ready:
                data = session.receive()
                if data is None:
                    break
                out.write(data)
                out.flush()
            if reading_stdin and stdin_fd in ready:
                typed = os.read(stdin_fd, 4096)
                if not typed:
                    reading_stdin = False  # end of input: keep watching
                    continue
                before, chord, _ = typed.partition(detach)
                if before and session.writes:
                    session.send(before)
                if chord:
                    break
    reason = session.ended or "detached"
    print(f"\r\nmaqet: {reason} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return C.EXIT_OK
