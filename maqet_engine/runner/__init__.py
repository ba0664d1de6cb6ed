"""The per-VM runner: one small asyncio process that owns QEMU and its QMP connection.

Layout (the wire format apart from the handlers, as in qemu.qmp)::

    protocol.py   newline-delimited JSON requests/replies, size limit     (pure)
    keys.py       key names / text -> QMP send-key qcodes                 (pure)
    liveness.py   "is a runner alive?" = is its lock file locked          (sync)
    client.py     small synchronous client for the control socket        (sync, no asyncio)
    spawn.py      build QEMU's argv from the spec, start a detached runner,
                  wait for its readiness line                             (sync)
    __main__.py   ``python -m maqet_engine.runner --name NAME --ready-fd N``,
                  QEMU's argv as JSON on stdin
    qemu.py       launch or re-adopt QEMU, watch its exit through a pidfd (runner side)
    vm.py         the supervised VM: QMP, events -> store, stop ladder    (runner side)
    serial.py     drains the serial socket, serves serial_wait            (runner side)
    handlers.py   IPC methods                                             (runner side)
    server.py     the control socket: peer uid check, framing             (runner side)

Only the sync modules are imported by the CLI and the engine; asyncio and qemu.qmp
load in the runner process alone. The runner process in turn imports neither the spec
package nor ssl/OpenSSL (one runner per VM: its memory counts, see docs/runner.md).
"""
