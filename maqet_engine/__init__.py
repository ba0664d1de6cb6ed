"""maqet: QEMU virtual machines without libvirt, driven from Ansible.

Importing the package is cheap on purpose: the CLI's fast paths (``--version``,
``ls``) must not pay for asyncio, qemu.qmp or psutil. Heavy modules import them
lazily.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
