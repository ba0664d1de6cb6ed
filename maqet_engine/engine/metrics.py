"""Prometheus metrics of every VM of one maqet home (docs/observability.md).

A custom ``prometheus_client`` collector builds the metric families afresh at each
scrape (nothing is kept between scrapes, so every process exposes the same truth):

- one pass over the store: the VM records (status, spec, start time) and one grouped
  count of the events that counters come from (crashes, re-adoptions, stop rungs;
  what retention pruned is folded into ``event_totals``, so they never go down);
- per VM whose QEMU lives: one read of ``/proc/PID/stat`` (CPU seconds, resident
  memory), checked against the recorded start time (a reused PID is not our QEMU);
- per VM whose runner lives: one request, QMP ``query-blockstats`` through the runner,
  all in parallel threads, each bounded by ``METRICS_VM_TIMEOUT_S``: a hung runner costs
  its own series (``maqet_vm_scrape_error{vm} 1``, no block series), not the scrape.

Three ways out: :func:`metrics_text` (``maqet metrics``), :func:`serve_metrics`
(``--listen``: prometheus_client's HTTP server, loopback by default) and
:func:`write_metrics_textfile` (``--textfile``: written beside, then renamed, for
node_exporter's textfile collector).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maqet_engine import constants as C
from maqet_engine.engine import runstate
from maqet_engine.engine.context import EngineContext
from maqet_engine.errors import HostError, MaqetError, UsageError, host_error
from maqet_engine.ipc import procs
from maqet_engine.store import VMRecord, VMStatus

RUNGS = ("powerdown", "quit", "kill")
COUNTED_EVENTS = ("crashed", "adopted", "stop_rung")
# query-blockstats "stats" keys -> (metric suffix, help)
BLOCK_STATS = (
    ("rd_bytes", "block_read_bytes", "Bytes the guest read from this drive."),
    ("wr_bytes", "block_written_bytes", "Bytes the guest wrote to this drive."),
    ("rd_operations", "block_read_ops", "Read requests the guest made to this drive."),
    ("wr_operations", "block_write_ops", "Write requests the guest made to this drive."),
    ("flush_operations", "block_flush_ops", "Flush requests the guest made to this drive."),
)


class VMSample:
    """What one scrape found about one VM."""

    __slots__ = ("record", "run", "usage", "blockstats", "error")

    def __init__(self, record: VMRecord, run: runstate.RunView) -> None:
        self.record = record
        self.run = run
        self.usage: tuple[float, int] | None = None  # (CPU seconds, resident bytes)
        self.blockstats: list[dict[str, Any]] | None = None
        self.error: str | None = None  # why the runner could not be asked


def _blockstats(ctx: EngineContext, record: VMRecord, timeout: float) -> list[dict[str, Any]]:
    """QMP ``query-blockstats`` through the VM's runner, bounded by ``timeout`` (connect,
    send and reply together). Never re-adopts, never repairs: a scrape only reads."""
    from maqet_engine.control.client import RunnerClient

    socket_path = ctx.paths.vm_runtime(record.id).control_socket
    with RunnerClient(socket_path, timeout=timeout) as client:
        reply = client.call("qmp", command="query-blockstats", arguments={},
                            ipc_timeout=timeout)
    return list(reply) if isinstance(reply, list) else []


def sample(ctx: EngineContext, *, vm_timeout: float = C.METRICS_VM_TIMEOUT_S,
           ) -> tuple[list[VMSample], dict[tuple[str, str, str], int]]:
    """Everything one scrape needs: per VM its record, run view, usage and block
    stats; and the event counts (``{(vm, kind, detail): n}``)."""
    with ctx.open_store(create=False, verify=False) as store:
        records = store.list_vms()
        counts = store.event_counts(COUNTED_EVENTS)
    samples = [VMSample(r, runstate.probe(ctx.paths, r)) for r in records]
    for found in samples:
        if found.run.qemu_alive:
            found.usage = procs.usage(found.record.qemu_pid, found.record.qemu_start)
    asked = [s for s in samples if s.run.runner_alive]
    if asked:
        pool = ThreadPoolExecutor(max_workers=min(C.METRICS_THREADS, len(asked)),
                                  thread_name_prefix="maqet-metrics")
        try:
            futures = {pool.submit(_blockstats, ctx, s.record, vm_timeout): s for s in asked}
            done, _late = wait_all(futures, timeout=vm_timeout + C.METRICS_VM_TIMEOUT_S)
            for future, found in futures.items():
                if future not in done:
                    found.error = f"the runner did not answer within {vm_timeout:g} s"
                elif isinstance(future.exception(), MaqetError | OSError):
                    found.error = str(future.exception())
                elif future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]  # a bug: say so
                else:
                    found.blockstats = future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return samples, counts


def _drive(entry: dict[str, Any]) -> str:
    return str(entry.get("node-name") or entry.get("device") or entry.get("qdev") or "?")


class MaqetCollector(Collector):
    """The collector: metric families of every VM, built at each scrape."""

    def __init__(self, ctx: EngineContext, *, vm_timeout: float = C.METRICS_VM_TIMEOUT_S,
                 ) -> None:
        self.ctx = ctx
        self.vm_timeout = vm_timeout

    def describe(self) -> list[Metric]:
        return []  # registering must not scrape

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        samples, counts = sample(self.ctx, vm_timeout=self.vm_timeout)
        yield from families(samples, counts, now=time.time())
        duration = GaugeMetricFamily(
            "maqet_scrape_duration_seconds", "How long collecting these metrics took.")
        duration.add_metric([], time.monotonic() - started)
        yield duration


def families(samples: list[VMSample], counts: dict[tuple[str, str, str], int], *,
             now: float) -> Iterator[Metric]:
    """The metric families of one scrape (pure: testable without processes)."""
    statuses = [s.value for s in VMStatus]
    up = GaugeMetricFamily("maqet_vm_up", "1 while the VM's QEMU runs (status starting, "
                           "running, paused or stopping), else 0.", labels=["vm"])
    status = GaugeMetricFamily("maqet_vm_status", "The VM's observed status (one series "
                               "per status, 1 for the current one).", labels=["vm", "status"])
    start_time = GaugeMetricFamily("maqet_vm_start_time_seconds", "When the running QEMU "
                                   "was started (Unix time).", labels=["vm"])
    uptime = GaugeMetricFamily("maqet_vm_uptime_seconds", "Seconds since the running QEMU "
                               "was started.", labels=["vm"])
    cpu = CounterMetricFamily("maqet_vm_cpu_seconds", "CPU time QEMU used (user and system; "
                              "TCG emulation included).", labels=["vm"])
    rss = GaugeMetricFamily("maqet_vm_resident_memory_bytes", "QEMU's resident memory.",
                            labels=["vm"])
    vcpus = GaugeMetricFamily("maqet_vm_configured_vcpus", "vCPUs in the VM's definition.",
                              labels=["vm"])
    memory = GaugeMetricFamily("maqet_vm_configured_memory_bytes", "Guest memory in the "
                               "VM's definition.", labels=["vm"])
    block = {key: CounterMetricFamily(f"maqet_vm_{name}", text, labels=["vm", "drive"])
             for key, name, text in BLOCK_STATS}
    readoptions = CounterMetricFamily("maqet_vm_runner_readoptions", "Times a new runner "
                                      "re-adopted the VM's live QEMU.", labels=["vm"])
    crashes = CounterMetricFamily("maqet_vm_crashes", "Times the VM was recorded crashed.",
                                  labels=["vm"])
    rungs = CounterMetricFamily("maqet_vm_stop_rungs", "Stop ladder rungs taken: powerdown "
                                "(ACPI), quit (QMP), kill (SIGKILL).", labels=["vm", "rung"])
    scrape_error = GaugeMetricFamily("maqet_vm_scrape_error", "1 when the VM's runner could "
                                     "not be asked this scrape (no block series then).",
                                     labels=["vm"])
    per_status = dict.fromkeys(statuses, 0)
    for found in samples:
        record, run, vm = found.record, found.run, found.record.name
        spec = record.spec_data
        per_status[run.status.value] += 1
        up.add_metric([vm], 1.0 if run.active else 0.0)
        for value in statuses:
            status.add_metric([vm, value], 1.0 if run.status.value == value else 0.0)
        if run.active and record.started_at:
            start_time.add_metric([vm], record.started_at)
            uptime.add_metric([vm], max(0.0, now - record.started_at))
        if found.usage is not None:
            cpu.add_metric([vm], found.usage[0])
            rss.add_metric([vm], float(found.usage[1]))
        vcpus.add_metric([vm], float(spec.get("cpu") or 1))
        if spec.get("memory") is not None:
            memory.add_metric([vm], float(spec["memory"]))
        for entry in found.blockstats or []:
            stats = entry.get("stats") or {}
            for key, family in block.items():
                if key in stats:
                    family.add_metric([vm, _drive(entry)], float(stats[key]))
        readoptions.add_metric([vm], float(counts.get((vm, "adopted", ""), 0)))
        crashes.add_metric([vm], float(counts.get((vm, "crashed", ""), 0)))
        for rung in RUNGS:
            rungs.add_metric([vm, rung], float(counts.get((vm, "stop_rung", rung), 0)))
        scrape_error.add_metric([vm], 1.0 if found.error else 0.0)
    vms = GaugeMetricFamily("maqet_vms", "VMs of this maqet home by observed status.",
                            labels=["status"])
    for value, number in per_status.items():
        vms.add_metric([value], float(number))
    yield from (up, status, start_time, uptime, cpu, rss, vcpus, memory, *block.values(),
                readoptions, crashes, rungs, scrape_error, vms)


def registry(ctx: EngineContext, *, vm_timeout: float = C.METRICS_VM_TIMEOUT_S,
             ) -> CollectorRegistry:
    """A registry holding only maqet's collector (no metrics of this process)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(MaqetCollector(ctx, vm_timeout=vm_timeout))
    return found


def metrics_text(ctx: EngineContext) -> str:
    """The Prometheus text exposition of every VM, once."""
    from prometheus_client import generate_latest

    return generate_latest(registry(ctx)).decode()


def write_metrics_textfile(ctx: EngineContext, directory: str | Path) -> Path:
    """Write ``DIR/maqet.prom`` for node_exporter's textfile collector: written to a
    temporary name in the same directory, then renamed over it, so a reader sees the
    old file or the new one, never a part (prometheus_client's ``write_to_textfile``).
    Returns the path."""
    from prometheus_client import write_to_textfile

    folder = Path(directory)
    if not folder.is_dir():
        raise UsageError(f"--textfile {folder}: not a directory",
                         hint="create it, or name node_exporter's textfile directory")
    path = folder / C.METRICS_TEXTFILE
    try:
        write_to_textfile(str(path), registry(ctx))
    except OSError as err:
        raise host_error(err, "write the metrics file", path) from err
    return path


class MetricsServer:
    """``/metrics`` over HTTP (prometheus_client's threaded server), from
    :func:`serve_metrics`; a context manager that shuts the server down."""

    def __init__(self, ctx: EngineContext, address: str, port: int) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, address, registry(ctx))
        except OSError as err:
            import errno

            if err.errno == errno.EADDRINUSE:
                raise HostError(f"cannot listen on {address}:{port}: the address is in use",
                                hint="pick another port, or stop what listens there") \
                    from err
            raise host_error(err, "listen for metrics scrapes on", f"{address}:{port}") \
                from err
        self.address = address
        self.port = int(self._server.server_address[1])
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` (or Ctrl-C); True when closed."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        if not self._closed.is_set():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._closed.set()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(ctx: EngineContext, address: str = C.METRICS_DEFAULT_ADDRESS,
                  port: int = 0) -> MetricsServer:
    """Serve the metrics at ``http://ADDRESS:PORT/metrics`` from threads of this
    process until closed (``port`` 0: a free one, see ``.port``). Loopback by default:
    the metrics name your VMs and the server has no authentication."""
    return MetricsServer(ctx, address, port)
