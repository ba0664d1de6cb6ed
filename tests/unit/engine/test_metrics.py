"""Metric families from store records and event counts (pure), the CLI's three ways out
on a home without running VMs, and --listen's address parsing. No QEMU: the real
scrapes, Prometheus included, are tests/integration/test_observability.py."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from maqet_engine import engine
from maqet_engine.cli.main import main
from maqet_engine.cli.observe_cmds import listen_address
from maqet_engine.engine.metrics import VMSample, families
from maqet_engine.engine.runstate import observe
from maqet_engine.errors import UsageError
from maqet_engine.store import Store, VMStatus


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def define(store: Store, name: str, status: VMStatus, **fields) -> None:
    spec = json.dumps({"name": name, "cpu": 2, "memory": 64 * 2**20})
    store.insert_vm(name, spec, "h")
    store.update_runtime(name, status=status, **fields)


def test_families_follow_prometheus_conventions(tmp_path: Path):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    with Store.open(tmp_path / "m.db") as store:
        define(store, "web1", VMStatus.RUNNING, started_at=1000.0)
        define(store, "db1", VMStatus.STOPPED)
        store.add_event("web1", "stop_rung", {"rung": "kill"})
        store.add_event("web1", "crashed", {})
        records = {r.name: r for r in store.list_vms()}
        counts = store.event_counts(("crashed", "adopted", "stop_rung"))
    web = VMSample(records["web1"], observe(records["web1"], runner_locked=True,
                                            qemu_alive=True))
    web.usage = (12.5, 50 * 2**20)
    web.blockstats = [{"node-name": "hdd", "stats": {"rd_bytes": 512, "wr_bytes": 0,
                                                     "rd_operations": 1}}]
    db = VMSample(records["db1"], observe(records["db1"], runner_locked=False,
                                          qemu_alive=False))
    db.error = None

    class Fixed(Collector):
        def collect(self):
            return families([web, db], counts, now=1010.0)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    found = samples_of(generate_latest(registry).decode())
    vm = (("vm", "web1"),)
    assert found[("maqet_vm_up", vm)] == 1 and found[("maqet_vm_up", (("vm", "db1"),))] == 0
    assert found[("maqet_vm_status", (("status", "running"), ("vm", "web1")))] == 1
    assert sum(v for (n, labels), v in found.items()
               if n == "maqet_vm_status" and ("vm", "web1") in labels) == 1  # one-hot
    assert found[("maqet_vm_uptime_seconds", vm)] == 10
    assert found[("maqet_vm_start_time_seconds", vm)] == 1000
    assert found[("maqet_vm_cpu_seconds_total", vm)] == 12.5
    assert found[("maqet_vm_resident_memory_bytes", vm)] == 50 * 2**20
    assert found[("maqet_vm_configured_vcpus", vm)] == 2
    assert found[("maqet_vm_configured_memory_bytes", vm)] == 64 * 2**20
    assert found[("maqet_vm_block_read_bytes_total", (("drive", "hdd"), ("vm", "web1")))] == 512
    assert found[("maqet_vm_crashes_total", vm)] == 1
    assert found[("maqet_vm_stop_rungs_total", (("rung", "kill"), ("vm", "web1")))] == 1
    assert found[("maqet_vm_stop_rungs_total", (("rung", "quit"), ("vm", "db1")))] == 0
    assert found[("maqet_vm_runner_readoptions_total", vm)] == 0
    assert found[("maqet_vm_scrape_error", vm)] == 0
    assert found[("maqet_vms", (("status", "running"),))] == 1
    assert found[("maqet_vms", (("status", "stopped"),))] == 1
    assert ("maqet_vm_uptime_seconds", (("vm", "db1"),)) not in found  # not running
    names = {name for name, _ in found}
    assert all(n.startswith("maqet_") for n in names)


def test_cli_prints_serves_and_writes_the_same_metrics(maqet_home, tmp_path, capsys):
    ctx = engine.EngineContext.from_env()
    engine.define(ctx, engine.load_definition(ctx, definition={"name": "vm1",
                                                               "memory": "64M"}))
    assert main(["metrics"]) == 0
    printed = samples_of(capsys.readouterr().out)
    assert printed[("maqet_vm_status", (("status", "defined"), ("vm", "vm1")))] == 1
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    assert main(["metrics", "--textfile", str(textfiles)]) == 0
    written = samples_of((textfiles / "maqet.prom").read_text())
    assert [p.name for p in textfiles.iterdir()] == ["maqet.prom"]  # no temporary left
    with engine.serve_metrics(ctx, "127.0.0.1", 0) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        with urllib.request.urlopen(server.url, timeout=10) as reply:
            served = samples_of(reply.read().decode())
    for found in (written, served):
        found.pop(("maqet_scrape_duration_seconds", ()))
    printed.pop(("maqet_scrape_duration_seconds", ()))
    assert printed == written == served
    assert main(["metrics", "--textfile", str(tmp_path / "nope")]) == 2


def test_metrics_of_an_empty_home_create_nothing(maqet_home, capsys):
    assert main(["metrics"]) == 0
    found = samples_of(capsys.readouterr().out)
    assert found[("maqet_vms", (("status", "running"),))] == 0
    assert not maqet_home.exists()


@pytest.mark.parametrize(("text", "wanted"), [
    ("9577", ("127.0.0.1", 9577)), ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("0.0.0.0:9577", ("0.0.0.0", 9577)), ("[::1]:9577", ("::1", 9577)),
    (":9577", ("127.0.0.1", 9577)),
])
def test_listen_takes_port_or_address_and_port(text, wanted):
    assert listen_address(text) == wanted


@pytest.mark.parametrize("bad", ["", "x", "127.0.0.1:", "1:99999", "host:-1"])
def test_listen_refuses_what_is_no_address(bad):
    with pytest.raises(UsageError, match="--listen"):
        listen_address(bad)


# --- the textfile: never seen half-written -----------------------------------------------
class Inotify:
    """Every event in one directory (a test's own reader: wakes on each write)."""

    def __init__(self, directory: Path) -> None:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(0o2000000)
        mask = 0x2 | 0x8 | 0x80 | 0x100  # IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE
        assert self.fd >= 0 and libc.inotify_add_watch(self.fd, bytes(directory), mask) >= 0

    def wait(self, timeout: float) -> bool:
        import os
        import select

        if not select.select([self.fd], [], [], timeout)[0]:
            return False
        os.read(self.fd, 65536)
        return True

    def close(self) -> None:
        import os

        os.close(self.fd)


def complete(text: str) -> bool:
    """A whole exposition: ends with its last family's sample and a newline, and parses."""
    if not text.endswith("\n") or "\nmaqet_scrape_duration_seconds " not in text:
        return False
    names = {f.name for f in text_string_to_metric_families(text)}
    return {"maqet_vm_up", "maqet_vms", "maqet_scrape_duration_seconds"} <= names


def test_the_textfile_is_never_seen_half_written(maqet_home, tmp_path):
    """A reader woken by inotify on every change in the directory reads maqet.prom each
    time while it is rewritten 40 times: it always finds a whole file. The control
    shows the reader would notice: the same file written in place, in two writes, is
    caught half-written."""
    import threading

    ctx = engine.EngineContext.from_env()
    for i in range(30):  # a file of some size: ~10 KiB
        engine.define(ctx, engine.load_definition(ctx, definition={"name": f"vm{i}",
                                                                   "memory": "64M"}))
    folder = tmp_path / "textfiles"
    folder.mkdir()
    path = engine.write_metrics_textfile(ctx, folder)
    assert complete(path.read_text()) and path.stat().st_size > 8192
    watch = Inotify(folder)
    done = threading.Event()
    seen: list[bool] = []

    def reader() -> None:
        while not done.is_set():
            if watch.wait(5.0):
                seen.append(complete(path.read_text()))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(40):
            engine.write_metrics_textfile(ctx, folder)
    finally:
        done.set()
        (folder / "stop").touch()  # wakes the reader for its last look
        thread.join(timeout=30)
    assert len(seen) >= 40 and all(seen), (len(seen), seen.count(False))

    # The control: in place, in two writes: the reader's wake-up on the first finds half.
    text = path.read_text()
    with open(path, "w") as fh:
        fh.write(text[: len(text) // 2])
        fh.flush()
        assert watch.wait(5.0)
        assert not complete(path.read_text())
        fh.write(text[len(text) // 2:])
    watch.close()
    assert complete(path.read_text())
