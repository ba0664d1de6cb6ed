"""Metrics scrape benchmark: what one Prometheus scrape of a maqet home costs.

    .venv/bin/python bench/bench_metrics.py [--vms 100] [--running 5] [--runs 15]

100 VMs defined (firmware only: ``accel: tcg``, no kernel, 64 MiB), a handful of them
running (each a real runner and QEMU: one IPC request, QMP ``query-blockstats``, and one
/proc read each per scrape), with 1,000 events recorded per VM (the default retention
limit, so the event counts read a full table). Figures (medians over ``--runs``):

- baseline: a bare store read of the same home (open, list the VMs, close);
- a scrape in-process (what ``maqet metrics --listen`` does for each request);
- ``maqet metrics`` as a command (a new process, Python start-up and imports included).

Target: 100 VMs scraped in <= 1 s. Not a test: it asserts nothing. Leaves no process
behind (the VMs are stopped with force, then anything left of this home is killed by
PID).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compile_package, description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "support"))
from procs import kill_mentioning  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(runs: int, fn) -> list[float]:
    fn()  # warm: imports, page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--running", type=int, default=5)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    compile_package()
    home = Path(tempfile.mkdtemp(prefix="maqet-bench-metrics-"))
    os.environ["MAQET_HOME"] = str(home)
    from maqet_engine import constants as C
    from maqet_engine import engine
    from maqet_engine.store import Store

    ctx = engine.EngineContext.from_env()
    names = [f"vm{i:03d}" for i in range(args.vms)]
    running = names[:args.running]
    try:
        for name in names:
            spec = engine.load_definition(ctx, definition={
                "name": name, "memory": "64M", "accel": "tcg",
                "storage": [{"name": "hdd", "type": "qcow2", "size": "16M"}]})
            engine.define(ctx, spec)
        with Store.open(ctx.paths.db) as store, store.write() as db:
            now = time.time()
            db.executemany(  # a full table: EVENTS_KEEP events per VM, some of each kind
                "INSERT INTO events (vm_name, at, kind, data) VALUES (?, ?, ?, ?)",
                [(name, now, ("stop_rung", "crashed", "adopted", "paused")[i % 4],
                  '{"rung": "quit"}') for name in names for i in range(C.EVENTS_KEEP - 1)])
        for name in running:
            engine.start(ctx, name)

        def bare() -> None:
            with Store.open(ctx.paths.db, create=False) as store:
                store.list_vms()

        def scrape() -> None:
            engine.metrics_text(ctx)

        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def command() -> None:
            subprocess.run([sys.executable, "-m", "maqet_engine", "metrics"], env=env,
                           check=True, stdout=subprocess.DEVNULL)

        base = timed(args.runs, bare)
        ours = timed(args.runs, scrape)
        cli = timed(max(3, args.runs // 3), command)
        text = engine.metrics_text(ctx)
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        print(f"home: {args.vms} VMs ({args.running} running), "
              f"{args.vms * C.EVENTS_KEEP} events, {series} series per scrape")
        print(f"{'bare store read (list VMs)':<34} {median_ms(base):8.1f} ms")
        print(f"{'scrape, in-process (--listen)':<34} {median_ms(ours):8.1f} ms   "
              f"ratio {median_ms(ours) / median_ms(base):6.1f}x   target <= 1000 ms")
        print(f"{'maqet metrics (new process)':<34} {median_ms(cli):8.1f} ms")
    finally:
        for name in running:
            try:
                engine.stop(ctx, name, force=True)
            except Exception as err:  # noqa: BLE001 - go on cleaning up
                print(f"stop {name}: {err}", file=sys.stderr)
        kill_mentioning(ctx.paths.runtime, ctx.paths.data)
        subprocess.run(["rm", "-rf", str(home)], check=False)


if __name__ == "__main__":
    main()
