"""Integration fixtures: real QEMU, the tiny real guest, a VM factory that owns every
process it causes and kills them by PID at teardown (Firecracker-test style)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import parse_spec
from maqet_engine.paths import Paths, resolve_paths
from maqet_engine.store import Store, VMRecord


@pytest.fixture(scope="session")
def guest_files() -> Any:
    import guest  # tests/guest/guest.py (tests/conftest.py puts it on sys.path)

    return guest.ensure_guest()


@dataclass
class VMFactory:
    """Defines VMs in one MAQET_HOME; at teardown kills, by PID, every runner and QEMU
    whose command line mentions this home's runtime directory or data directory."""

    home: Path
    paths: Paths
    guest: Any
    names: list[str] = field(default_factory=list)

    def store(self) -> Store:
        return Store.open(self.paths.db)

    def define(self, name: str = "vm1", *, with_guest: bool = True, **overrides: Any) -> str:
        import guest

        raw: dict[str, Any] = {"name": name, "accel": guest.test_accel(), "memory": "256M",
                               "machine": "q35", "arguments": ["-no-reboot"]}
        if with_guest:
            raw.update(kernel=str(self.guest.kernel), initrd=str(self.guest.initrd),
                       append=guest.GUEST_APPEND)
        raw.update(overrides)
        spec = parse_spec(raw, base_dir=self.home, paths=self.paths)
        with self.store() as store:
            store.insert_vm(spec.name, spec.to_json(), spec.hash)
        self.names.append(name)
        return name

    def record(self, name: str = "vm1") -> VMRecord:
        with self.store() as store:
            return store.require_vm(name)

    def our_pids(self) -> list[int]:
        from procs import pids_mentioning  # tests/support (on sys.path via tests/conftest.py)

        return pids_mentioning(self.paths.runtime, self.paths.data)

    def kill_all(self) -> list[int]:
        found = self.our_pids()
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in found:  # reap our own children; wait for the others through a pidfd
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
                continue
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)
                import select

                select.select([fd], [], [], 5.0)
                os.close(fd)
        return found


@pytest.fixture
def vms(maqet_home: Path, guest_files: Any) -> Iterator[VMFactory]:
    paths = resolve_paths()
    factory = VMFactory(home=maqet_home, paths=paths, guest=guest_files)
    yield factory
    leftovers = factory.kill_all()
    assert not factory.our_pids()
    del leftovers
