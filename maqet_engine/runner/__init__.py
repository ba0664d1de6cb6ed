"""The per-VM runner process: one small asyncio program that owns QEMU and its QMP
connection. Everything in this package runs *inside* that process; the caller side
(spawning it, talking to it) is :mod:`maqet_engine.control`, and what both share (the
wire format, the lock, process identity) is :mod:`maqet_engine.ipc`.

    __main__.py   ``python -m maqet_engine.runner --name NAME --ready-fd N``,
                  launch data (QEMU's argv) as JSON on stdin
    qemu.py       launch or re-adopt QEMU, watch its exit through a pidfd
    vm.py         the supervised VM: QMP, events -> store, stop ladder
    states.py     the run-state machine: allowed transitions, one function
    serial.py     drains the serial socket, serves serial_wait (listeners: console.py)
    console.py    console viewers: every byte from their attachment, one types
    agent.py      the guest agent's channel: in step (guest-sync), the port's events
    agent_ops.py  guest agent IPC methods: one command, exec and file streams
    jobs.py       QMP background jobs (snapshots) awaited by their events
    keys.py       key names / text -> qcode chords -> input events     (pure)
    handlers.py   IPC methods
    server.py     the control socket: peer uid check, framing, streams

The runner imports neither the definition package nor ssl/OpenSSL (one runner per
VM: its memory counts, see docs/runner.md). An architecture test enforces it.
"""
