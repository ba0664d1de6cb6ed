"""Integration fixtures: real QEMU, the tiny real guest, a VM factory that owns every
process it causes and kills them by PID at teardown (Firecracker-test style)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import parse_spec
from maqet_engine.engine import EngineContext
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

    def ctx(self, *, check_mode: bool = False) -> EngineContext:
        """The engine context of this home (what front ends pass the facade)."""
        return EngineContext(paths=self.paths, check_mode=check_mode)

    def define(self, name: str = "vm1", *, with_guest: bool = True, **overrides: Any) -> str:
        import guest

        raw: dict[str, Any] = guest.guest_definition(name, self.guest, **overrides)
        if not with_guest:
            for key in ("kernel", "initrd", "append"):
                raw.pop(key)
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
        from procs import kill_pids

        found = self.our_pids()
        kill_pids(found)
        return found


@pytest.fixture
def vms(maqet_home: Path, guest_files: Any) -> Iterator[VMFactory]:
    paths = resolve_paths()
    factory = VMFactory(home=maqet_home, paths=paths, guest=guest_files)
    yield factory
    leftovers = factory.kill_all()
    assert not factory.our_pids()
    del leftovers
