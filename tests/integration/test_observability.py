"""Issue 14 against the real things: a real Prometheus server scraping `maqet metrics
--listen`, real QEMU (firmware-only VMs under TCG), real runners, real signals.

- Prometheus's own query API sees the series with the right values through a start /
  re-adopt / crash (SIGKILL QEMU) / stop (powerdown, quit) / forced stop of a frozen QEMU
  (kill) sequence;
- a hung runner (SIGSTOP) costs its own series, not the scrape;
- an operation's trail: its events, its runner.log lines (JSON), its decision lines;
- the runner's writes prune events beyond the retention limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import guest  # tests/guest: program() fails, never skips, on a missing tool
import pytest
from procs import Lines, wait_pid_exit

from maqet_engine import constants as C
from maqet_engine import engine
from maqet_engine.errors import QMPCommandError
from maqet_engine.store import VMStatus

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
# Bounds, with what they cover (measured here: Prometheus ready in ~1 s, a change seen
# through its API within ~2 scrape intervals of 1 s):
READY_TIMEOUT_S = 60.0  # Prometheus start-up (TSDB in a temp dir) on a loaded 2-core box
SEEN_TIMEOUT_S = 30.0  # a change scraped, stored and answered by the query API
SCRAPE_BOUND_S = C.METRICS_VM_TIMEOUT_S + 1.0  # one hung runner: its own bound, then done
FIRMWARE = {"with_guest": False, "memory": "64M"}  # SeaBIOS only: cheap under TCG


# --- helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """A child of this test, killed by its PID at the end whatever happened."""
    proc = subprocess.Popen(argv, text=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def metrics_server(home: Path) -> Iterator[str]:
    """`maqet metrics --listen 127.0.0.1:0 --json`; yields its host:port."""
    argv = [sys.executable, "-m", "maqet_engine", "metrics", "--listen", "127.0.0.1:0",
            "--json"]
    env = {**os.environ, "MAQET_HOME": str(home), "PYTHONPATH": str(REPO)}
    with process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        line = Lines(proc.stdout).next(30.0)
        assert line, proc.stderr.read() if proc.poll() is not None else "no address"
        served = json.loads(line)
        assert served["address"] == "127.0.0.1"
        yield f"127.0.0.1:{served['port']}"
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it
        assert proc.wait(timeout=10) == C.EXIT_INTERRUPTED


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: ``{label values joined by ',': value}``."""
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        found = {}
        for item in body["data"]["result"]:
            labels = item["metric"]
            key = ",".join(f"{k}={v}" for k, v in sorted(labels.items())
                           if k not in ("__name__", "instance", "job"))
            found[key] = float(item["value"][1])
        return found

    def wait_for(self, expr: str, wanted: dict[str, float]) -> dict[str, float]:
        """Query until the result holds ``wanted`` (bounded by SEEN_TIMEOUT_S): the way
        to wait for the next scrape through Prometheus's own API."""
        deadline = time.monotonic() + SEEN_TIMEOUT_S
        while True:
            found = self.query(expr)
            if all(found.get(k) == v for k, v in wanted.items()):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr}: wanted {wanted}, Prometheus has {found}")
            time.sleep(0.25)  # the next scrape is at most 1 s away


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[Prometheus]:
    """A real Prometheus (Debian's), this test's own process on loopback, scraping
    ``target`` every second into a temporary TSDB; killed by its PID at the end."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: maqet\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    argv = [guest.program("prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"]
    with process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        # Its log says when it is ready; /-/ready confirms it (both bounded).
        deadline = time.monotonic() + READY_TIMEOUT_S
        log = Lines(proc.stderr)
        while True:
            line = log.next(max(0.1, deadline - time.monotonic()))
            assert line, f"Prometheus exited ({proc.poll()}) or was not ready in time"
            if "Server is ready to receive web requests" in line:
                break
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/-/ready", timeout=10) as reply:
            assert reply.status == 200
        yield Prometheus(url)


def wait_recorded(vms: Any, name: str, status: str) -> None:
    """Until the store records ``status`` (the runner records an exit as it exits)."""
    record = vms.record(name)
    if record.runner_pid:
        wait_pid_exit(record.runner_pid, 30.0)
    assert vms.record(name).status.value == status


# --- Prometheus ------------------------------------------------------------------------
def test_prometheus_sees_start_readoption_crash_and_every_stop_rung(vms, tmp_path):
    """vm1: started, its runner killed and QEMU re-adopted, then QEMU SIGKILLed (crash);
    vm2: stopped gracefully, but firmware ignores ACPI (powerdown, then quit);
    vm3: QEMU frozen (SIGSTOP), stopped with force (quit unanswered, then kill)."""
    ctx = vms.ctx()
    names = [vms.define(f"vm{i}", **FIRMWARE) for i in (1, 2, 3)]
    with metrics_server(vms.home) as target, prometheus(tmp_path, target) as prom:
        for name in names:
            engine.start(ctx, name)
        prom.wait_for("maqet_vm_up", {f"vm={n}": 1 for n in names})
        memory = prom.query("maqet_vm_configured_memory_bytes")
        assert memory == {f"vm={n}": 64 * 2**20 for n in names}
        assert prom.query('maqet_vm_status{vm="vm1"}') == {  # one-hot
            f"status={s.value},vm=vm1": float(s == VMStatus.RUNNING) for s in VMStatus}
        prom.wait_for("maqet_vm_crashes_total", {f"vm={n}": 0 for n in names})

        runner = vms.record("vm1").runner_pid
        os.kill(runner, signal.SIGKILL)
        wait_pid_exit(runner, 10.0)
        assert [a["action"] for a in engine.start(ctx, "vm1").actions] == ["adopt"]
        qemu = vms.record("vm1").qemu_pid
        os.kill(qemu, signal.SIGKILL)
        wait_recorded(vms, "vm1", "crashed")

        stopped = engine.stop(ctx, "vm2", timeout=0.5)
        assert stopped.actions[0]["rung"] == "quit"
        os.kill(vms.record("vm3").qemu_pid, signal.SIGSTOP)
        forced = engine.stop(ctx, "vm3", force=True)
        assert forced.actions[0]["rung"] == "kill"

        prom.wait_for("maqet_vm_up", {"vm=vm1": 0, "vm=vm2": 0, "vm=vm3": 0})
        prom.wait_for("maqet_vm_status == 1", {"status=crashed,vm=vm1": 1,
                                               "status=stopped,vm=vm2": 1,
                                               "status=stopped,vm=vm3": 1})
        prom.wait_for("maqet_vm_crashes_total", {"vm=vm1": 1, "vm=vm2": 0, "vm=vm3": 0})
        prom.wait_for("maqet_vm_runner_readoptions_total", {"vm=vm1": 1, "vm=vm2": 0})
        rungs = prom.wait_for("maqet_vm_stop_rungs_total", {
            "rung=powerdown,vm=vm2": 1, "rung=quit,vm=vm2": 1, "rung=kill,vm=vm2": 0,
            "rung=powerdown,vm=vm3": 0, "rung=quit,vm=vm3": 1, "rung=kill,vm=vm3": 1})
        assert sum(v for k, v in rungs.items() if k.endswith("vm=vm1")) == 0
        prom.wait_for("maqet_vms", {"status=crashed": 1, "status=stopped": 2,
                                    "status=running": 0})
        # The counter existed at 0 before the crash: increase() and alerts see it.
        assert prom.query('max_over_time(maqet_vm_crashes_total{vm="vm1"}[5m])'
                          ' - min_over_time(maqet_vm_crashes_total{vm="vm1"}[5m])') == {
            "vm=vm1": 1}
        # (vm3's may have been 1 while its QEMU was frozen: query-blockstats hung.)
        errors = prom.query("max_over_time(maqet_vm_scrape_error[5m])")
        assert (errors["vm=vm1"], errors["vm=vm2"]) == (0, 0)
        assert prom.query('up{job="maqet"}') == {"": 1}


# --- a hung runner ----------------------------------------------------------------------
def test_a_hung_runner_costs_its_own_series_not_the_scrape(vms):
    ctx = vms.ctx()
    for name in ("fast", "hung"):
        vms.define(name, **FIRMWARE, storage=[{"name": "hdd", "type": "qcow2",
                                               "size": "16M"}])
        engine.start(ctx, name)
    runner = vms.record("hung").runner_pid
    os.kill(runner, signal.SIGSTOP)
    try:
        started = time.monotonic()
        text = engine.metrics_text(ctx)
        took = time.monotonic() - started
    finally:
        os.kill(runner, signal.SIGCONT)
    assert took < SCRAPE_BOUND_S, took
    assert 'maqet_vm_scrape_error{vm="hung"} 1.0' in text
    assert 'maqet_vm_scrape_error{vm="fast"} 0.0' in text
    assert 'maqet_vm_block_read_ops_total{drive="hdd",vm="fast"}' in text
    assert 'vm="hung"' not in "".join(line for line in text.splitlines()
                                     if line.startswith("maqet_vm_block_"))
    assert 'maqet_vm_up{vm="hung"} 1.0' in text  # the VM itself still runs


# --- one operation's trail --------------------------------------------------------------
def test_an_operations_trail_in_events_and_json_runner_log(vms, monkeypatch, capsys):
    """Start (op start-1), a refused QMP command (op bad-2), a stop (op stop-3), with
    MAQET_LOG_FORMAT=json: each op's events, and its lines in runner.log."""
    monkeypatch.setenv(C.ENV_LOG_FORMAT, "json")
    name = vms.define("vm1", **FIRMWARE)
    ctx = vms.ctx()
    engine.start(ctx.with_op_id("start-1"), name)
    with pytest.raises(QMPCommandError):
        engine.qmp(ctx.with_op_id("bad-2"), name, "no-such-command")
    engine.stop(ctx.with_op_id("stop-3"), name, timeout=0.5)

    def kinds(op: str) -> list[str]:
        return [e["kind"] for e in engine.events(ctx, name, op_id=op).data]

    assert kinds("start-1") == ["starting", "started"]
    assert kinds("bad-2") == ["request_failed"]
    failed = engine.events(ctx, name, op_id="bad-2").data[0]["data"]
    assert (failed["method"], failed["command"], failed["error"]) == (
        "qmp", "no-such-command", "QMPCommandError")
    # POWERDOWN and SHUTDOWN are QEMU's events, caused by this stop: its op too.
    assert kinds("stop-3") == ["stop_requested", "stop_rung", "POWERDOWN", "stop_rung",
                               "SHUTDOWN", "stopped"]

    from maqet_engine.cli.main import main

    assert main(["events", name, "--op", "stop-3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.endswith("op=stop-3") for line in lines)

    log = vms.paths.vm_data(name).runner_log.read_text().splitlines()
    records = [json.loads(line) for line in log]  # every line is one JSON object
    assert all({"time", "level", "vm", "event", "message", "op"} <= set(r) for r in records)
    by_op = {op: [r for r in records if r["op"] == op] for op in ("start-1", "bad-2", "stop-3")}
    assert {"starting", "started"} <= {r["event"] for r in by_op["start-1"]}
    assert [r["event"] for r in by_op["bad-2"]] == ["request_failed"]
    stop_lines = by_op["stop-3"]
    assert stop_lines[0]["event"] == "decision" and stop_lines[0]["process"].startswith(
        "engine[")
    assert {"stop_requested", "stop_rung", "stopped"} <= {r["event"] for r in stop_lines}
    assert {r["vm"] for r in records} == {name}


# --- retention, in the runner's write path -----------------------------------------------
def test_the_runners_writes_prune_events_beyond_the_limit(vms, monkeypatch):
    keep = 5
    monkeypatch.setenv(C.ENV_EVENTS_KEEP, str(keep))  # the runner inherits it
    name = vms.define("vm1", **FIRMWARE)
    ctx = vms.ctx()
    engine.start(ctx, name)
    while True:  # past two pruning writes (every EVENTS_PRUNE_EVERY-th event id)
        engine.pause(ctx, name)
        engine.resume(ctx, name)
        with vms.store() as store:
            if store.last_event_id() > 2 * C.EVENTS_PRUNE_EVERY:
                break
    engine.stop(ctx, name, timeout=0.5)
    with vms.store() as store:
        kept = store.find_events(vm=name)
        since_prune = store.last_event_id() % C.EVENTS_PRUNE_EVERY
        assert len(kept) <= keep + since_prune < keep + C.EVENTS_PRUNE_EVERY
        counts = store.event_counts(("stop_rung",))
    assert counts == {(name, "stop_rung", "powerdown"): 1, (name, "stop_rung", "quit"): 1}
