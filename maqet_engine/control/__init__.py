"""Caller-side control of runner processes: spawn one, talk to one.

    spawn.py      start a detached runner, hand it QEMU's argv and the QMP socket,
                  wait for its readiness line                              (sync)
    client.py     small synchronous client of a runner's control socket   (sync)

Everything here runs in the caller (CLI, Ansible module, Python user), never in the
runner. It imports no asyncio and no qemu.qmp (``maqet qmp`` stays fast), and not the
definition package: the engine builds QEMU's command line and hands it down.
"""
