"""resolve_accel: 'auto' means kvm only when /dev/kvm opens read-write and the CPU
has vmx or svm."""

from __future__ import annotations

from pathlib import Path

import pytest

from maqet_engine.definition import resolve_accel

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm\n"
NONE = "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\nvmx flags\t: ept\n"


@pytest.fixture
def kvm(tmp_path: Path) -> Path:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    return device


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [(INTEL, "kvm"), (AMD, "kvm"), (NONE, "tcg")],
                         ids=["vmx", "svm", "no-flag"])
def test_auto_follows_cpu_flags(tmp_path: Path, kvm: Path, text: str, expected: str):
    assert resolve_accel("auto", kvm_device=kvm, cpuinfo=cpuinfo(tmp_path, text)) == expected


def test_auto_without_kvm_device(tmp_path: Path):
    info = cpuinfo(tmp_path, INTEL)
    assert resolve_accel("auto", kvm_device=tmp_path / "missing", cpuinfo=info) == "tcg"
    assert resolve_accel("auto", kvm_device=tmp_path, cpuinfo=info) == "tcg"  # not openable


def test_auto_without_cpuinfo(tmp_path: Path, kvm: Path):
    assert resolve_accel("auto", kvm_device=kvm, cpuinfo=tmp_path / "missing") == "tcg"


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_explicit_values_are_returned_as_is(tmp_path: Path, accel: str):
    assert resolve_accel(accel, kvm_device=tmp_path / "missing",
                         cpuinfo=tmp_path / "missing") == accel


def test_real_host_gives_a_valid_answer():
    assert resolve_accel("auto") in {"kvm", "tcg"}
