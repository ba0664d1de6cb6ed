"""The maqet.vm.hypervisor role's KVM probe (roles/hypervisor/files/kvm_probe.sh) against
made-up /proc/cpuinfo, /sys/module and /dev/kvm: every verdict and its reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

PROBE = (Path(__file__).resolve().parents[2] / "ansible_collections" / "maqet" / "vm"
         / "roles" / "hypervisor" / "files" / "kvm_probe.sh")


def probe(tmp_path: Path, *, flags: str, modules: tuple[str, ...] = (),
          dev: bool = False) -> dict:
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags} sse2\n")
    for module in modules:
        (tmp_path / "module" / module).mkdir(parents=True)
    (tmp_path / "module").mkdir(exist_ok=True)
    if dev:
        (tmp_path / "kvm").touch()
    out = subprocess.run(["sh", str(PROBE)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin",
                              "MAQET_PROBE_CPUINFO": str(tmp_path / "cpuinfo"),
                              "MAQET_PROBE_SYS_MODULE": str(tmp_path / "module"),
                              "MAQET_PROBE_DEV_KVM": str(tmp_path / "kvm")}).stdout
    return json.loads(out)


@pytest.mark.parametrize("flags, modules, dev, kvm, flag, reason", [
    ("pae", (), True, False, None, "no vmx or svm in"),
    ("vmx", (), True, False, "vmx", "the kvm_intel module is not loaded (modprobe kvm_intel"),
    ("svm", ("kvm_intel",), True, False, "svm", "the kvm_amd module is not loaded"),
    ("svm", ("kvm_amd",), False, False, "svm", "kvm_amd is loaded but"),
    ("vmx", ("kvm_intel",), True, True, "vmx", "vmx, kvm_intel loaded"),
])
def test_probe_verdicts(tmp_path: Path, flags: str, modules: tuple[str, ...], dev: bool,
                        kvm: bool, flag: str | None, reason: str):
    found = probe(tmp_path, flags=flags, modules=modules, dev=dev)
    assert found["kvm"] is kvm and found["cpu_virtualization"] == flag
    assert reason in found["reason"], found


def test_vmx_as_part_of_another_flag_does_not_count(tmp_path: Path):
    assert probe(tmp_path, flags="vmxfoo avx512_vmx", modules=("kvm_intel",),
                 dev=True)["kvm"] is False
