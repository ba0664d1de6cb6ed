"""Snapshot benchmarks: maqet vs bare qemu-img / direct QMP, on the same kind of image,
measured in the same run (medians, ratios). Target: <= 1.1x.

    .venv/bin/python bench/bench_snapshots.py [--runs N] [--no-live]

- offline create / load / delete of one disk: ``engine.snapshot(drive=...)`` (desired
  state: it reads the image's snapshot list first, then acts; the list comes from the
  qcow2 snapshot table read in Python, storage/qcow2.py, not a qemu-img process) vs
  one bare ``qemu-img snapshot -c/-a/-d``; also vs the bare *idempotent* equivalent
  (``qemu-img info --output=json`` then the operation), the shell way to do the same.
- live VM-wide create / load (RAM + disks) of the tiny test guest (TCG, 256 MiB):
  ``engine.snapshot`` through the runner vs ``snapshot-save``/``-load`` jobs awaited by
  events on a direct qemu.qmp connection to a second, identical QEMU.
Not a test: asserts nothing. Kills every process it starts by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "guest"))


def med(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, ours: list[float], base: list[float], base_label: str) -> None:
    print(f"{label:<28} maqet {med(ours):8.2f} ms   {base_label} {med(base):8.2f} ms   "
          f"ratio {med(ours) / med(base):5.2f}x")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def bench_offline(runs: int, home: Path) -> None:
    os.environ["MAQET_HOME"] = str(home)
    from maqet_engine import engine
    from maqet_engine.storage import prepare_storage
    from maqet_engine.store import Store

    ctx = engine.EngineContext.from_env()
    paths = ctx.paths
    spec = engine.load_definition(ctx, definition={
        "name": "bench", "storage": [{"name": "hdd", "type": "qcow2", "size": "256M"}]})
    engine.define(ctx, spec)
    with Store.open(paths.db) as store:  # the disk without starting the VM
        prepare_storage(paths, store, spec)
    ours_img = paths.vm_data("bench").root / "hdd.qcow2"
    bare_img = home / "bare.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(bare_img), "256M")
    for img in (ours_img, bare_img):
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 8M", str(img)],
                       check=True, capture_output=True)
    results: dict[str, tuple[list[float], list[float], list[float]]] = {}
    ops = (("create", "present", "-c"), ("load", "reverted", "-a"), ("delete", "absent", "-d"))
    for op, _state, _flag in ops:
        results[op] = ([], [], [])
    for i in range(runs):
        name = f"s{i}"
        for op, state, flag in ops:
            ours, bare, bare_idem = results[op]
            ours.append(timed(lambda n=name, s=state: engine.snapshot(
                ctx, "bench", n, state=s, drive="hdd")))
            bare.append(timed(lambda n=name, f=flag: qemu_img("snapshot", f, n,
                                                              str(bare_img))))

            def idempotent(n: str = name, f: str = flag) -> None:
                json.loads(subprocess.run(["qemu-img", "info", "--output=json",
                                           str(bare_img)], check=True, capture_output=True,
                                          text=True).stdout)
                qemu_img("snapshot", f, f"i{n}", str(bare_img))
            bare_idem.append(timed(idempotent))
    print("offline (256M qcow2, 8M written):")
    for op, (ours, bare, bare_idem) in results.items():
        report(f"  {op} vs bare op", ours, bare, "qemu-img")
        report(f"  {op} vs bare info+op", ours, bare_idem, "qemu-img")


def bench_live(runs: int, home: Path) -> None:
    import guest
    from qemu.qmp import EventListener, QMPClient

    from maqet_engine import engine
    from maqet_engine.errors import RuntimeFailure

    files = guest.ensure_guest()
    ctx = engine.EngineContext.from_env()
    paths = ctx.paths
    raw = guest.guest_definition("live", files,
                                 storage=[{"name": "hdd", "type": "qcow2", "size": "64M"}])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        engine.apply(ctx, spec=engine.load_definition(ctx, definition=raw),
                     state="running")  # creates the disk, then starts
        guest.wait_marker(paths, "live")
        ours: dict[str, list[float]] = {"create": [], "load": []}
        for i in range(runs):
            try:
                ours["create"].append(timed(lambda n=f"s{i}": engine.snapshot(ctx, "live",
                                                                               n)))
            except RuntimeFailure as err:
                print(f"live: skipped ({err})")
                return
            ours["load"].append(timed(lambda n=f"s{i}": engine.snapshot(
                ctx, "live", n, state="reverted")))

        async def direct() -> dict[str, list[float]]:
            disk = home / "direct.qcow2"
            qemu_img("create", "-q", "-f", "qcow2", str(disk), "64M")
            sock = str(home / "d.sock")
            qmp = QMPClient("bench")
            await qmp.start_server(sock)
            node = json.dumps({"driver": "qcow2", "node-name": "hdd",
                               "file": {"driver": "file", "filename": str(disk)}})
            serial = guest.listen_unix(home / "s.sock")  # pre-bound: no connect race
            procs.append(subprocess.Popen([
                "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "256",
                "-nodefaults", "-display", "none", "-no-reboot",
                "-kernel", str(files.kernel), "-initrd", str(files.initrd),
                "-append", guest.GUEST_APPEND,
                "-chardev", f"socket,id=s0,fd={serial.fileno()},server=on,wait=off",
                "-serial", "chardev:s0",
                "-chardev", f"socket,id=mon,path={sock}", "-mon", "chardev=mon,mode=control",
                "-blockdev", node, "-device", "virtio-blk-pci,drive=hdd,id=hdd"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(serial.fileno(),)))
            serial.close()
            console = guest.SerialConsole(home / "s.sock")
            await asyncio.wait_for(qmp.accept(), 20)
            out: dict[str, list[float]] = {"create": [], "load": []}

            async def job(command: str, args: dict, job_id: str) -> None:
                listener = EventListener("JOB_STATUS_CHANGE",
                                         lambda e: e["data"]["id"] == job_id)
                with qmp.listen(listener):
                    await qmp.execute(command, {**args, "job-id": job_id})
                    async for event in listener:
                        if event["data"]["status"] == "concluded":
                            break
                await qmp.execute("query-jobs")
                await qmp.execute("job-dismiss", {"id": job_id})

            # boot to the marker (~2 s); the console thread wakes the wait, no polling
            await asyncio.to_thread(console.wait_for, guest.GUEST_MARKER, 60.0)
            for i in range(runs):
                args = {"tag": f"s{i}", "vmstate": "hdd", "devices": ["hdd"]}
                start = time.perf_counter()
                await job("snapshot-save", args, f"c{i}")
                out["create"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await job("snapshot-load", args, f"l{i}")
                out["load"].append(time.perf_counter() - start)
            await qmp.disconnect()
            console.close()
            return out

        base = asyncio.run(direct())
        print("live (tiny guest, TCG, 256 MiB RAM, RAM + disk):")
        for op in ("create", "load"):
            report(f"  {op}", ours[op], base[op], "direct QMP")
    finally:
        engine.stop(ctx, "live", force=True)
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maqet-bench-") as tmp:
        bench_offline(args.runs, Path(tmp) / "offline")
        if not args.no_live:
            bench_live(args.runs, Path(tmp) / "offline")


if __name__ == "__main__":
    main()
