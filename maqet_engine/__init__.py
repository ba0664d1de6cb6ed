"""maqet: QEMU virtual machines without libvirt, driven from Ansible.

Importing the package is cheap on purpose: the CLI's fast paths (``--version``,
``ls``) must not pay for asyncio, qemu.qmp, PyYAML or logging. Heavy modules import
them lazily. Modules that log get their logger from :mod:`maqet_engine.log`, which
gives the package logger its ``NullHandler`` (importing ``logging`` here would
cost the fast paths several milliseconds).

Front ends and Python users enter through :mod:`maqet_engine.engine` (the facade).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
