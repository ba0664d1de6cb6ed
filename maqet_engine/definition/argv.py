"""The QEMU command line of a spec: a pure function of the spec and its paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.machine import DeviceSlots
from maqet_engine.definition.model import Spec
from maqet_engine.definition.network import network_argv
from maqet_engine.definition.qemuopts import opt_value
from maqet_engine.definition.storage import StorageRegistry, default_registry, seed_disk_argv
from maqet_engine.paths import VMDataPaths, VMRuntimePaths

_MIB = 1024 * 1024


def memory_arg(n_bytes: int) -> str:
    """``-m`` value: whole MiB as ``512M``, anything else exact as ``1000000b``."""
    return f"{n_bytes // _MIB}M" if n_bytes % _MIB == 0 else f"{n_bytes}b"


def sandbox_arg(spec: Spec, *, run_as: str | None) -> str:
    """``-sandbox`` value: seccomp as tight as this spec allows (see constants)."""
    spawn = "allow" if any(n["type"] == "bridge" for n in spec.data["network"]) else "deny"
    elevate = "allow" if run_as else "deny"
    return f"{C.SANDBOX_BASE},spawn={spawn},elevateprivileges={elevate}"


def build_argv(spec: Spec, *, runtime: VMRuntimePaths, data: VMDataPaths, accel: str,
               qmp_fd: int | str = C.QMP_FD_PLACEHOLDER,
               agent_fd: int | str = C.AGENT_FD_PLACEHOLDER,
               registry: StorageRegistry | None = None, run_as: str | None = None,
               sandbox: bool = False,
               backends: Mapping[int, Mapping[str, Any]] | None = None) -> list[str]:
    """QEMU's argv (``argv[0]`` is ``binary`` as written; the runner resolves it).

    :param accel: the resolved accelerator (``kvm`` or ``tcg``), see ``resolve_accel``.
    :param qmp_fd: the fd of the QMP listening socket the spawner bound (QEMU inherits
        it). Views pass nothing and show :data:`~maqet_engine.constants.QMP_FD_PLACEHOLDER`:
        the one part of a shown command line that differs from what runs.
    :param agent_fd: likewise, the guest agent's socket (``agent: true`` only).
    :param registry: storage types (default: :func:`default_registry`).
    :param run_as: ``-runas USER``: QEMU opens its files, then drops to that user (the
        caller decides: root with the ``maqet-qemu`` user, see ``command_line``).
    :param sandbox: add ``-sandbox`` (seccomp, :func:`sandbox_arg`).
    :param backends: the host side of each NIC on a named network, by NIC position, as
        the engine resolved it (``network.network_argv``).
    """
    d = spec.data
    name = d["name"]
    argv = [d["binary"], "-name", f"{name},process={C.QEMU_PROCESS_PREFIX}{name}",
            "-nodefaults", "-no-user-config", "-accel", accel]
    if sandbox:
        argv += ["-sandbox", sandbox_arg(spec, run_as=run_as)]
    if run_as is not None:
        argv += ["-runas", run_as]
    if d["machine"] is not None:
        argv += ["-machine", d["machine"]]
    if d["memory"] is not None:
        argv += ["-m", memory_arg(d["memory"])]
    if d["cpu"] is not None:
        argv += ["-smp", str(d["cpu"])]
    if d["cpu_model"] is not None:
        argv += ["-cpu", d["cpu_model"]]
    serial = C.SERIAL_CHARDEV_ID
    argv += [
        "-chardev", f"socket,id={C.QMP_CHARDEV_ID},fd={qmp_fd},server=on,wait=off",
        "-mon", f"chardev={C.QMP_CHARDEV_ID},mode=control",
        "-chardev", f"socket,id={serial},path={opt_value(str(runtime.serial_socket))},"
        f"server=on,wait=off,logfile={opt_value(str(data.serial_log))},logappend=on",
        "-serial", f"chardev:{serial}",
        "-display", d["display"],
        "-vga", d["vga"],
    ]
    for key, option in (("kernel", "-kernel"), ("initrd", "-initrd"), ("append", "-append")):
        if d[key] is not None:
            argv += [option, d[key]]
    argv += _storage_argv(spec, registry or default_registry())
    if d.get("cloud_init") is not None:
        argv += seed_disk_argv(str(data.cloud_init_seed))
    for index, nic in enumerate(d["network"]):
        argv += network_argv(nic, index, (backends or {}).get(index))
    if d.get("agent"):
        argv += agent_argv(agent_fd)
    argv += d["arguments"]
    return argv


def agent_argv(fd: int | str) -> list[str]:
    """The guest agent's channel: a virtio-serial controller and the port qemu-ga looks
    for, backed by the listening socket the spawner bound (``fd``). The runner is its one
    client; QMP reports the guest opening and closing the port (``VSERPORT_CHANGE`` with
    the port's id)."""
    return [
        "-chardev", f"socket,id={C.AGENT_CHARDEV_ID},fd={fd},server=on,wait=off",
        "-device", f"virtio-serial-pci,id={C.AGENT_SERIAL_ID}",
        "-device", f"virtserialport,bus={C.AGENT_SERIAL_ID}.0,chardev={C.AGENT_CHARDEV_ID},"
        f"name={C.AGENT_PORT_NAME},id={C.AGENT_PORT_ID}",
    ]


def _storage_argv(spec: Spec, registry: StorageRegistry) -> list[str]:
    controllers: list[tuple[str, ...]] = []
    devices: list[str] = []
    slots = DeviceSlots(spec.data["machine"])
    for entry in spec.data["storage"]:
        parts = registry.get(entry["type"]).argv(entry, slots)
        controllers += [c for c in parts.controllers if c not in controllers]
        devices += parts.args
    return [arg for controller in controllers for arg in controller] + devices
