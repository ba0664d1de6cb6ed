"""Fixtures of the spec tests: a definition directory with real files, a MAQET_HOME."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.definition import Spec, parse_spec
from maqet_engine.paths import Paths, resolve_paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve_paths({"MAQET_HOME": str(tmp_path / "home")})


@pytest.fixture
def defdir(tmp_path: Path) -> Path:
    """Where definition files live, with the files they name."""
    d = tmp_path / "def"
    d.mkdir()
    (d / "vmlinuz").write_bytes(b"kernel")
    (d / "initrd.gz").write_bytes(b"initrd")
    (d / "debian.iso").write_bytes(b"iso")
    (d / "base.qcow2").write_bytes(b"base")
    (d / "share").mkdir()
    return d


@pytest.fixture
def parse(paths: Paths, defdir: Path) -> Callable[..., Spec]:
    """``parse(raw)``: parse_spec relative to ``defdir`` in the test's home."""

    def _parse(raw: Mapping[str, Any], **kwargs: Any) -> Spec:
        kwargs.setdefault("base_dir", defdir)
        kwargs.setdefault("paths", paths)
        return parse_spec(raw, **kwargs)

    return _parse
