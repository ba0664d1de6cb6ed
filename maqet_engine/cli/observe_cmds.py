"""Observability commands: ``maqet events`` (the event stream) and ``maqet metrics``
(Prometheus). Thin: each is a facade call (docs/observability.md)."""

from __future__ import annotations

import argparse
import json
import sys

from maqet_engine import constants as C
from maqet_engine.cli.context import CLIContext
from maqet_engine.cli.definition_cmds import seconds
from maqet_engine.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    events = subparsers.add_parser(
        "events", parents=[common], help="what happened to VMs, oldest first (-f: as it happens)",
        description="Recorded events, oldest first: status changes, QEMU's QMP events, stop "
        "rungs, re-adoptions, crashes and their reasons, snapshot operations, failed "
        "requests. Each names the operation that caused it (op).")
    events.add_argument("name", nargs="?", help="only this VM's events")
    events.add_argument("--since", metavar="TIME",
                        help="only events since TIME: ISO time (2024-05-01T12:00), epoch "
                        "seconds, or a time ago (30s, 10m, 2h, 3d, 1w)")
    events.add_argument("--op", dest="op_id", metavar="ID",
                        help="only the events of one operation (its op id)")
    events.add_argument("-n", "--lines", type=int, default=None, metavar="N",
                        help="only the last N events (with --follow: none unless --since)")
    events.add_argument("-f", "--follow", action="store_true",
                        help="then print new events as they are recorded (Ctrl-C ends)")
    events.add_argument("--timeout", type=seconds, default=None,
                        help="with --follow: stop after this many seconds")
    events.set_defaults(handler=cmd_events)

    metrics = subparsers.add_parser(
        "metrics", parents=[common], help="Prometheus metrics of every VM",
        description="Print the Prometheus text exposition of every VM once, serve it over "
        "HTTP (--listen), or write it for node_exporter's textfile collector (--textfile).")
    where = metrics.add_mutually_exclusive_group()
    where.add_argument("--listen", metavar="[ADDRESS:]PORT",
                       help="serve /metrics over HTTP until Ctrl-C; ADDRESS defaults to "
                       f"{C.METRICS_DEFAULT_ADDRESS} (loopback only: the metrics name your "
                       "VMs and there is no authentication); PORT 0 picks a free one")
    where.add_argument("--textfile", metavar="DIR",
                       help=f"write DIR/{C.METRICS_TEXTFILE} atomically (node_exporter's "
                       "--collector.textfile.directory)")
    metrics.set_defaults(handler=cmd_metrics)


# --- events ---------------------------------------------------------------------------
def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in "\"'=" for c in value) \
            else json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def event_line(event: dict[str, Any]) -> str:
    """``TIME  VM  KIND  key=value...  op=ID`` for people."""
    details = " ".join(f"{k}={_value(v)}" for k, v in sorted(event["data"].items()))
    parts = [event["time"][:23].replace("T", " "), event["vm"], event["kind"]]
    if details:
        parts.append(details)
    if event.get("op_id"):
        parts.append(f"op={event['op_id']}")
    return "  ".join(parts)


def cmd_events(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine import engine

    if args.timeout is not None and not args.follow:
        raise UsageError("--timeout only goes with --follow")
    if not args.follow:
        found = engine.events(ctx.engine(), args.name, since=args.since, op_id=args.op_id,
                              limit=args.lines).data
        if ctx.json:
            ctx.emit(found)
        else:
            for event in found:
                print(event_line(event))
        return C.EXIT_OK
    backlog = args.lines if args.lines is not None else (None if args.since else 0)
    stream = engine.follow_events(ctx.engine(), args.name, op_id=args.op_id, since=args.since,
                                  limit=backlog, timeout=args.timeout)
    for event in stream:  # a stream: one compact JSON object per line with --json
        print(json.dumps(event, sort_keys=True) if ctx.json else event_line(event))
        sys.stdout.flush()
    return C.EXIT_OK


# --- metrics --------------------------------------------------------------------------
def listen_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``ADDRESS:PORT`` (``[v6]:PORT``) for --listen."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = C.METRICS_DEFAULT_ADDRESS
    host = host.strip("[]") or C.METRICS_DEFAULT_ADDRESS
    try:
        port = int(port_text)
        if not 0 <= port <= C.PORT_MAX:
            raise ValueError
    except ValueError:
        raise UsageError(f"--listen {text!r}: not [ADDRESS:]PORT",
                         hint=f"for example 9577 or {C.METRICS_DEFAULT_ADDRESS}:9577") from None
    return host, port


def cmd_metrics(args: argparse.Namespace, ctx: CLIContext) -> int:
    from maqet_engine import engine

    if args.textfile:
        path = engine.write_metrics_textfile(ctx.engine(), args.textfile)
        ctx.emit({"path": str(path)}, None)
        return C.EXIT_OK
    if args.listen:
        host, port = listen_address(args.listen)
        with engine.serve_metrics(ctx.engine(), host, port) as server:
            if ctx.json:
                print(json.dumps({"url": server.url, "address": server.address,
                                  "port": server.port}), flush=True)
            else:
                print(f"maqet: serving {server.url} (Ctrl-C ends)", file=sys.stderr,
                      flush=True)
            server.wait()
        return C.EXIT_OK
    sys.stdout.write(engine.metrics_text(ctx.engine()))
    return C.EXIT_OK
