"""``maqet``: argument parsing, dispatch, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from maqet_engine import __version__
from maqet_engine import constants as C
from maqet_engine.errors import MaqetError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting, so usage
    errors get the same one-line / JSON treatment as every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the subcommand from being reset after it.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON output (errors too)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of internal errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="say what the engine decides (wanted, found, action) on stderr")
    return common


def build_parser() -> argparse.ArgumentParser:
    from maqet_engine.cli import (
        definition_cmds,
        guest_cmds,
        image_cmds,
        network_cmds,
        observe_cmds,
        runtime_cmds,
        snapshot_cmds,
        storage_cmds,
    )

    common = _common_options()
    parser = _Parser(prog="maqet", parents=[common],
                     description="QEMU virtual machines without libvirt.")
    parser.add_argument("--version", action="version", version=f"maqet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in (definition_cmds, runtime_cmds, guest_cmds, storage_cmds, snapshot_cmds,
                   image_cmds, network_cmds, observe_cmds):
        module.register(subparsers, common)
    return parser


def _maqet_words(argv: Sequence[str]) -> Sequence[str]:
    """The words that are maqet's: those before ``--`` (after it: a guest command's)."""
    return argv[:argv.index("--")] if "--" in argv else argv


def _wants_json(argv: Sequence[str]) -> bool:
    return "--json" in _maqet_words(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)
    debug = "--debug" in _maqet_words(argv)
    op_id: str | None = None  # this command's operation id, once there is one
    try:
        args = build_parser().parse_args(argv)
        from maqet_engine.cli.context import CLIContext
        from maqet_engine.engine import EngineContext

        base = EngineContext.from_env()  # one operation id per command
        op_id = base.op_id
        if getattr(args, "verbose", False):
            from maqet_engine.engine import enable_verbose

            enable_verbose(sys.stderr)
            print(f"maqet: operation {op_id} (maqet events --op {op_id})", file=sys.stderr)

        ctx = CLIContext(base=base, json=as_json, debug=debug)
        return int(args.handler(args, ctx))
    except MaqetError as err:
        return _report(err, as_json, debug, op_id)
    except KeyboardInterrupt:
        print("maqet: interrupted", file=sys.stderr)
        return C.EXIT_INTERRUPTED
    except BrokenPipeError:
        return C.EXIT_OK
    except Exception as err:  # a bug: one line unless --debug
        if debug:
            raise
        wrapped = MaqetError(f"internal error: {type(err).__name__}: {err}",
                             hint="rerun with --debug and report it")
        return _report(wrapped, as_json, debug, op_id)


def _report(err: MaqetError, as_json: bool, debug: bool, op_id: str | None = None) -> int:
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    partial = getattr(err, "result", None)  # what the call changed before it failed
    if as_json:
        from maqet_engine.cli.output import dump_json

        data = {"error": err.to_dict(), "changed": bool(partial and partial.changed)}
        if op_id is not None:
            data["op_id"] = op_id
        if partial is not None:
            data["result"] = partial.to_dict()
        dump_json(data)
    else:
        done = f" (changed before the error: {', '.join(partial.describe())})" \
            if partial is not None and partial.changed else ""
        print(f"maqet: error: {err}{done}", file=sys.stderr)
    return err.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
