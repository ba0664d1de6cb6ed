"""Network benchmark: two VMs on a maqet segment vs the same two VMs talking through
user networking's port forwards, measured in the same run (the same guests, the same
TCG load). Under TCG every number is low; the ratio is what counts.

    .venv/bin/python bench/bench_networks.py [--megabytes N] [--rounds N] [--runs N]

Each VM (the busybox test guest) has NIC 0 on user networking (10.0.2.15; VM b forwards
a host port to its port 5001 and another to 5002) and NIC 1 on a loopback segment
(10.250.7.1 and .2). From VM a, with busybox tools:

- TCP throughput: ``dd if=/dev/zero bs=64k count=... | nc HOST PORT`` timed by busybox
  ``time``; b counts what arrives (``nc -l | wc -c``). Segment: b's address; user
  networking: 10.0.2.2:HOSTPORT (slirp's host address), forwarded back into b.
- TCP round trip in one connection: ``--rounds`` lines sent one at a time to an echo
  server on b (``nc -ll -e cat``), each after the previous one came back (a shell loop
  of builtins on a FIFO: no process per round trip).
- TCP connect + one line there and back + close (``echo x | nc HOST PORT``), ``--rounds``
  of them timed together: what a short request costs.
- ICMP ping RTT on the segment (user networking cannot carry ICMP between two VMs).

Not a test: asserts nothing. Kills every process it starts by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import socket
import statistics
import sys
import tempfile
from pathlib import Path

from common import description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "guest"))
sys.path.insert(0, str(REPO / "tests" / "support"))

SEGMENT = {"a": "10.250.7.1", "b": "10.250.7.2"}
USER_ADDRESS = "10.0.2.15/24"
SLIRP_HOST = "10.0.2.2"
SINK_PORT, ECHO_PORT = 5001, 5002


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seconds(output: str) -> float:
    """busybox ``time``: ``real 0m 1.23s`` (or ``real 1m 2.5s``)."""
    match = re.search(r"real\s+(\d+)m\s*([\d.]+)s", output)
    assert match, f"no time in {output[-500:]!r}"
    return int(match.group(1)) * 60 + float(match.group(2))


def main() -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--megabytes", type=int, default=32, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=200,
                        help="TCP round trips (and 1/10 as many connections) per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="maqet-bench-net-"))
    os.environ["MAQET_HOME"] = str(home)
    import guest
    from guestnet import GuestShell
    from procs import kill_mentioning

    from maqet_engine import engine
    from maqet_engine.paths import resolve_paths

    ctx = engine.EngineContext.from_env()
    files = guest.ensure_guest()
    network = f"bench-{secrets.token_hex(3)}"
    engine.apply_network(ctx, engine.load_network(ctx, definition={"name": network,
                                                                   "type": "segment"}))
    sink_fwd, echo_fwd = free_port(), free_port()
    shells = {}
    try:
        for index, name in enumerate(("a", "b"), start=1):
            user: dict[str, object] = {"type": "user", "mac": f"52:54:00:00:0a:0{index}"}
            if name == "b":
                user["forward"] = [{"host": sink_fwd, "guest": SINK_PORT},
                                   {"host": echo_fwd, "guest": ECHO_PORT}]
            spec = engine.load_definition(ctx, definition=guest.guest_definition(
                name, files, network=[user, {"network": network}]))
            engine.apply(ctx, spec=spec, state="running")
            shells[name] = GuestShell(ctx, name)
        for name, shell in shells.items():
            shell.wait_ready()
            nics = engine.show(ctx, name).data["networks"]
            shell.configure(USER_ADDRESS, mac=nics[0]["mac"])
            shell.configure(f"{SEGMENT[name]}/24", mac=nics[1]["mac"])
        a, b = shells["a"], shells["b"]
        b.check(f"nc -ll -p {ECHO_PORT} -e cat </dev/null >/dev/null 2>&1 &")
        assert a.ping(SEGMENT["b"]), "the segment does not work"

        paths = {"segment": (SEGMENT["b"], SINK_PORT, ECHO_PORT),
                 "user-net forwards": (SLIRP_HOST, sink_fwd, echo_fwd)}
        results: dict[str, dict[str, list[float]]] = {
            p: {"mbps": [], "rtt": [], "connect": []} for p in paths}
        a.check("rm -f /tmp/pp && mkfifo /tmp/pp")
        count = args.megabytes * 16  # 64 KiB blocks
        connects = max(1, args.rounds // 10)
        for _run in range(args.runs):
            for label, (host, sink, echo) in paths.items():
                b.check(f"(sleep 600 | nc -l -p {SINK_PORT} | wc -c > /tmp/got) "
                        ">/dev/null 2>&1 &")
                b.check("sleep 0.3")
                _, out = a.run(f"time sh -c 'dd if=/dev/zero bs=64k count={count} "
                               f"2>/dev/null | nc {host} {sink}' 2>&1 | tail -3",
                               timeout=600)
                elapsed = seconds(out)
                _, got = b.run("sleep 1; cat /tmp/got")
                received = int(re.findall(r"^(\d+)\s*$", got, re.MULTILINE)[-1])
                b.run("kill $(pidof sleep) 2>/dev/null; true")
                results[label]["mbps"].append(received / elapsed / 1e6)
                _, out = a.run(f"time sh -c '( i=0; echo x; while read l; do i=$((i+1)); "
                               f"[ $i -ge {args.rounds} ] && break; echo x; done ) </tmp/pp | "
                               f"nc {host} {echo} >/tmp/pp' 2>&1 | tail -3", timeout=600)
                results[label]["rtt"].append(seconds(out) / args.rounds * 1000)
                _, out = a.run(f"time sh -c 'for i in $(seq {connects}); do echo x | "
                               f"nc -w 5 {host} {echo} >/dev/null; done' 2>&1 | tail -3",
                               timeout=600)
                results[label]["connect"].append(seconds(out) / connects * 1000)
        pings = []
        for _run in range(args.runs):
            _, out = a.run(f"ping -c 20 -i 0.2 {SEGMENT['b']} | tail -1")
            avg = re.findall(r"min/avg/max = [\d.]+/([\d.]+)/", out)
            pings.append(float(avg[-1]))

        seg, usr = results["segment"], results["user-net forwards"]
        print(f"two busybox guests under TCG, {args.runs} runs each, medians "
              f"(throughput: {args.megabytes} MB per run; {args.rounds} round trips and "
              f"{connects} connections per run)")
        print(f"{'(ratio: how many times better on the segment)':34}{'segment':>12}"
              f"{'user-net fwd':>14}{'ratio':>9}")
        tput_s, tput_u = statistics.median(seg["mbps"]), statistics.median(usr["mbps"])
        print(f"{'TCP throughput (MB/s)':34}{tput_s:12.2f}{tput_u:14.2f}"
              f"{tput_s / tput_u:8.2f}x")
        for key, label in (("rtt", "TCP round trip, one connection"),
                           ("connect", "TCP connect+line+close")):
            ms_s, ms_u = statistics.median(seg[key]), statistics.median(usr[key])
            print(f"{label + ' (ms)':34}{ms_s:12.2f}{ms_u:14.2f}{ms_u / ms_s:8.2f}x")
        print(f"{'ICMP ping RTT on the segment (ms)':34}{statistics.median(pings):12.3f}"
              f"{'-':>14}")
    finally:
        for name in shells:
            with contextlib.suppress(Exception):
                engine.stop(ctx, name, force=True)
        paths_ = resolve_paths()
        kill_mentioning(paths_.runtime, paths_.data)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
