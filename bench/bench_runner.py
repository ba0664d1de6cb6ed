"""Runner benchmarks: ratios against raw QEMU / direct QMP measured in the same run.

    .venv/bin/python bench/bench_runner.py [--runs N]

Figures (medians):
- start: ``ensure_running`` (spawn runner -> QEMU -> QMP confirmed) vs raw
  ``qemu-system-x86_64`` spawn -> QMP greeting + query-status (same argv, firmware only).
  Target: maqet <= raw + 150 ms.
- IPC round trip: ``qmp query-status`` through the runner (one open connection) vs a
  direct qemu.qmp ``execute`` on a raw QEMU. Target: <= 3x.
- ``maqet qmp NAME query-status`` CLI wall (new process each time). Target: <= 50 ms.
- graceful stop: ``ensure_stopped`` wall vs the raw guest's ``system_powerdown`` -> exit,
  on the tiny test guest (TCG). Overhead = difference.
- runner memory: VmRSS (the issue's target, <= 15 MiB), and PSS/USS from
  /proc/PID/smaps_rollup (USS = private pages: what each additional runner costs; VmRSS
  also counts libpython/libc/libsqlite pages shared with every other Python process).
Not a test: it asserts nothing. Leaves no process behind (kills by PID in finally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compile_package, description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "guest"))
sys.path.insert(0, str(REPO / "tests" / "support"))
from procs import wait_pid_exit  # noqa: E402  # tests/support: one pidfd wait for all


def runner_memory(pid: int) -> dict[str, float]:
    """MiB of one process: VmRSS (/proc/PID/status: every resident page, shared libraries
    included), PSS (shared pages divided among their users) and USS (pages only this
    process has: what one more runner costs), from /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/status") as fh:
        status = {k: v.split() for k, _, v in (line.partition(":") for line in fh)}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        rollup = {k: v.split() for k, _, v in (line.partition(":") for line in fh) if v}
    kib = {"rss": int(status["VmRSS"][0]), "pss": int(rollup["Pss"][0]),
           "uss": int(rollup["Private_Clean"][0]) + int(rollup["Private_Dirty"][0]),
           "anon": int(status["RssAnon"][0]), "file": int(status["RssFile"][0])}
    return {key: value / 1024 for key, value in kib.items()}


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def raw_start_and_rtt(argv: list[str], workdir: Path, rtt_runs: int,
                            ) -> tuple[float, float, int]:
    """Spawn QEMU with a pre-bound QMP socket, time until query-status answers; then
    the median direct round trip. Returns (start s, rtt s, pid)."""
    import guest
    from qemu.qmp import QMPClient

    path = workdir / "raw-qmp.sock"
    start = time.perf_counter()
    listener = guest.listen_unix(path)
    proc = subprocess.Popen(
        [*argv, "-chardev", f"socket,id=m,fd={listener.fileno()},server=on,wait=off",
         "-mon", "chardev=m,mode=control"],
        pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    listener.close()
    qmp = QMPClient("raw")
    await qmp.connect(str(path))
    await qmp.execute("query-status")
    started = time.perf_counter() - start
    rtts = []
    for _ in range(rtt_runs):
        t = time.perf_counter()
        await qmp.execute("query-status")
        rtts.append(time.perf_counter() - t)
    with contextlib.suppress(Exception):  # QEMU may close before answering quit
        await qmp.execute("quit")
    with contextlib.suppress(Exception):
        await qmp.disconnect()
    proc.wait(10)
    return started, statistics.median(rtts), proc.pid


async def raw_graceful_stop(argv: list[str], workdir: Path) -> float:
    """Boot the guest raw, wait for its marker on the serial socket, then time
    system_powerdown -> QEMU exit."""
    import guest
    from qemu.qmp import QMPClient

    qmp_path, serial_path = workdir / "g-qmp.sock", workdir / "g-serial.sock"
    for p in (qmp_path, serial_path):
        p.unlink(missing_ok=True)
    listener, serial_listener = guest.listen_unix(qmp_path), guest.listen_unix(serial_path)
    fds = (listener.fileno(), serial_listener.fileno())
    console = guest.SerialConsole(serial_path)  # waits in the backlog until QEMU accepts
    proc = subprocess.Popen(
        [*argv, "-chardev", f"socket,id=m,fd={fds[0]},server=on,wait=off",
         "-mon", "chardev=m,mode=control",
         "-chardev", f"socket,id=s,fd={fds[1]},server=on,wait=off", "-serial", "chardev:s"],
        pass_fds=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    listener.close()
    serial_listener.close()
    try:
        qmp = QMPClient("raw-guest")
        await qmp.connect(str(qmp_path))
        with console:
            console.wait_for(guest.GUEST_MARKER, timeout=60)
            t = time.perf_counter()
            await qmp.execute("system_powerdown")
            await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
            elapsed = time.perf_counter() - t
        with contextlib.suppress(Exception):
            await qmp.disconnect()
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        console.close()  # idempotent


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rtt-runs", type=int, default=200)
    args = parser.parse_args()
    compile_package()

    import guest

    home = Path(tempfile.mkdtemp(prefix="mqb", dir="/tmp"))
    os.environ["MAQET_HOME"] = str(home)
    from maqet_engine import engine
    from maqet_engine.control.client import RunnerClient

    ctx = engine.EngineContext.from_env()
    paths = ctx.paths
    files = guest.ensure_guest()
    fw = guest.guest_definition("fw", files)
    for key in ("kernel", "initrd", "append"):
        fw.pop(key)
    for definition in (fw, guest.guest_definition("g", files)):
        engine.define(ctx, engine.load_definition(ctx, definition=definition))

    def raw_argv(name: str) -> list[str]:
        argv = engine.show(ctx, name).data["argv"]  # the command line maqet launches
        i = argv.index("-mon")
        argv = argv[:i - 2] + argv[i + 2:]  # the bench supplies its own monitor
        i = argv.index("-chardev")
        return argv[:i] + argv[i + 4:]  # ... and its own serial (or none)

    def record(name: str) -> dict:
        return engine.show(ctx, name).data

    leftovers: list[int] = []
    workdir = Path(tempfile.mkdtemp(prefix="mqr", dir="/tmp"))
    try:
        raw_starts, raw_rtts = [], []
        for _ in range(args.runs):
            started, rtt, pid = asyncio.run(
                raw_start_and_rtt(raw_argv("fw"), workdir, args.rtt_runs))
            leftovers.append(pid)
            raw_starts.append(started)
            raw_rtts.append(rtt)

        starts, rtts, clis = [], [], []
        memory: list[dict[str, float]] = []
        env = dict(os.environ)
        for run in range(args.runs):
            t = time.perf_counter()
            engine.start(ctx, "fw")
            starts.append(time.perf_counter() - t)
            vm = record("fw")
            leftovers += [vm["runner_pid"], vm["qemu_pid"]]
            memory.append(runner_memory(vm["runner_pid"]))
            with RunnerClient(paths.vm_runtime(vm["id"]).control_socket) as client:
                samples = []
                for _ in range(args.rtt_runs):
                    t = time.perf_counter()
                    client.call("qmp", command="query-status")
                    samples.append(time.perf_counter() - t)
                rtts.append(statistics.median(samples))
            if run == 0:
                for _ in range(10):
                    t = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "maqet_engine", "qmp", "fw",
                                    "query-status"], env=env, stdout=subprocess.DEVNULL,
                                   check=True)
                    clis.append(time.perf_counter() - t)
            engine.stop(ctx, "fw", force=True)

        raw_stops, stops = [], []
        for _ in range(max(1, args.runs // 2)):
            raw_stops.append(asyncio.run(raw_graceful_stop(raw_argv("g"), workdir)))
            engine.start(ctx, "g")
            vm = record("g")
            leftovers += [vm["runner_pid"], vm["qemu_pid"]]
            guest.wait_marker(paths, "g")
            t = time.perf_counter()
            engine.stop(ctx, "g", timeout=30)
            stops.append(time.perf_counter() - t)
    finally:
        for pid in leftovers:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_pid_exit(pid, 5)

    raw_start, start = median_ms(raw_starts), median_ms(starts)
    raw_rtt, rtt = median_ms(raw_rtts), median_ms(rtts)
    raw_stop, stop = median_ms(raw_stops), median_ms(stops)
    cli = median_ms(clis)
    print(f"runs: {args.runs} (round trips: {args.rtt_runs} per run), accel tcg, "
          f"python {sys.version.split()[0]}")
    print(f"start -> QMP confirmed   maqet {start:7.1f} ms   raw QEMU {raw_start:7.1f} ms   "
          f"+{start - raw_start:.1f} ms  x{start / raw_start:.2f}   (target: raw + 150 ms)")
    print(f"QMP round trip           maqet {rtt:7.3f} ms   direct   {raw_rtt:7.3f} ms   "
          f"x{rtt / raw_rtt:.2f}   (target: <= 3x)")
    print(f"'maqet qmp' CLI wall     {cli:7.1f} ms   (target: <= 50 ms)")
    print(f"graceful stop            maqet {stop:7.1f} ms   raw QEMU {raw_stop:7.1f} ms   "
          f"+{stop - raw_stop:.1f} ms")
    mem = {key: statistics.median(m[key] for m in memory) for key in memory[0]}
    print(f"runner VmRSS             {mem['rss']:7.1f} MiB   (anon {mem['anon']:.1f} + file "
          f"{mem['file']:.1f}; target: <= 15 MiB)")
    print(f"runner PSS / USS         {mem['pss']:7.1f} MiB / {mem['uss']:.1f} MiB   "
          f"(USS: what one more running VM costs on top of QEMU)")


if __name__ == "__main__":
    main()
