"""Facts about the host the spec depends on: which accelerator ``auto`` means."""

from __future__ import annotations

import os
from pathlib import Path

from maqet_engine import constants as C

_VIRT_FLAGS = frozenset({"vmx", "svm"})


def resolve_accel(requested: str, *, kvm_device: Path = Path(C.KVM_DEVICE),
                  cpuinfo: Path = Path(C.CPUINFO_FILE)) -> str:
    """``auto`` -> ``kvm`` when ``/dev/kvm`` opens read-write and the CPU advertises
    VT-x or AMD-V (``vmx``/``svm``), else ``tcg``. Other values are returned as-is.
    The keyword arguments exist for tests."""
    if requested != "auto":
        return requested
    return "kvm" if _kvm_usable(kvm_device) and _cpu_has_virt(cpuinfo) else "tcg"


def _kvm_usable(device: Path) -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _cpu_has_virt(cpuinfo: Path) -> bool:
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and _VIRT_FLAGS & set(value.split()):
            return True
    return False
