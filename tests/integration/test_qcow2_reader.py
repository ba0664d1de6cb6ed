"""The pure-Python qcow2 snapshot-table reader, against images made by real qemu-img
(and one savevm for RAM state): it must agree with ``qemu-img info --output=json``
exactly, and refuse (so the caller asks qemu-img) whatever it does not understand."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from maqet_engine.snapshots import backends
from maqet_engine.snapshots.targets import Disk
from maqet_engine.storage import qcow2

pytestmark = pytest.mark.qemu

NAMES = ("plain", "with spaces", "ünïcödé-名前", "dots.and:colons", "x" * 63)


def img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True,
                          text=True).stdout


def make(path: Path, *names: str, compat: str = "1.1", extra: str = "") -> Path:
    options = f"compat={compat}" + (f",{extra}" if extra else "")
    img("create", "-q", "-f", "qcow2", "-o", options, str(path), "16M")
    for name in names:
        img("snapshot", "-c", name, str(path))
    return path


def qemu_says(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(img("info", "--output=json", str(path))).get("snapshots") or [])


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def header(path: Path) -> tuple[int, int]:
    """(nb_snapshots, snapshots_offset)"""
    with open(path, "rb") as f:
        f.seek(60)
        nb, offset = struct.unpack(">IQ", f.read(12))
    return nb, offset


@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_agrees_with_qemu_img(tmp_path: Path, compat: str):
    path = make(tmp_path / "a.qcow2", *NAMES, compat=compat)
    ours = qcow2.read_snapshots(path)
    assert [s["name"] for s in ours] == list(NAMES)
    assert ours == qemu_says(path)


def test_many_snapshots_and_deletions(tmp_path: Path):
    path = make(tmp_path / "m.qcow2", *(f"s{i:03d}" for i in range(60)))
    for i in range(0, 60, 7):
        img("snapshot", "-d", f"s{i:03d}", str(path))
    ours = qcow2.read_snapshots(path)
    assert len(ours) == 60 - len(range(0, 60, 7))
    assert ours == qemu_says(path)


def test_reads_ram_state_of_a_savevm_snapshot(tmp_path: Path):
    path = make(tmp_path / "r.qcow2")
    subprocess.run(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display",
                    "none", "-drive", f"file={path},if=none,id=d,format=qcow2",
                    "-monitor", "stdio"], input="savevm with-ram\nquit\n", text=True,
                   capture_output=True, check=True, timeout=60)
    [ours] = qcow2.read_snapshots(path)
    assert ours["vm-state-size"] > 0 and ours["name"] == "with-ram"
    assert [ours] == qemu_says(path)


def test_no_snapshots(tmp_path: Path):
    assert qcow2.read_snapshots(make(tmp_path / "e.qcow2")) == []
    assert qcow2.read_snapshots(make(tmp_path / "e2.qcow2", compat="0.10")) == []


def test_refuses_what_it_does_not_understand(tmp_path: Path):
    raw = tmp_path / "x.raw"
    img("create", "-q", "-f", "raw", str(raw), "1M")
    with pytest.raises(qcow2.Unsupported, match="not a qcow2"):
        qcow2.read_snapshots(raw)

    # (qcow2 with an external data file cannot hold internal snapshots at all)
    external = make(tmp_path / "ext.qcow2", extra=f"data_file={tmp_path / 'ext.raw'}")
    with pytest.raises(qcow2.Unsupported, match="incompatible features"):
        qcow2.read_snapshots(external)

    for bit, label in ((0, "dirty"), (1, "corrupt"), (40, "unknown")):
        flagged = make(tmp_path / f"{label}.qcow2", "s1")
        patch(flagged, 72, struct.pack(">Q", 1 << bit))
        with pytest.raises(qcow2.Unsupported, match="incompatible features"):
            qcow2.read_snapshots(flagged)

    version = make(tmp_path / "v4.qcow2", "s1")
    patch(version, 4, struct.pack(">I", 4))
    with pytest.raises(qcow2.Unsupported, match="version 4"):
        qcow2.read_snapshots(version)

    crypt = make(tmp_path / "c.qcow2", "s1", compat="0.10")
    patch(crypt, 32, struct.pack(">I", 1))
    with pytest.raises(qcow2.Unsupported, match="encrypted"):
        qcow2.read_snapshots(crypt)


def test_refuses_a_truncated_or_broken_table(tmp_path: Path):
    path = make(tmp_path / "t.qcow2", "one", "two")
    _, offset = header(path)
    truncated = tmp_path / "cut.qcow2"
    truncated.write_bytes(path.read_bytes()[:offset + 50])
    with pytest.raises(qcow2.Unsupported, match="truncated"):
        qcow2.read_snapshots(truncated)

    claims_more = make(tmp_path / "more.qcow2", "one")
    nb, _ = header(claims_more)
    patch(claims_more, 60, struct.pack(">I", nb + 100_000))
    with pytest.raises(qcow2.Unsupported):
        qcow2.read_snapshots(claims_more)

    bad_name = make(tmp_path / "utf.qcow2", "abc")
    _, offset = header(bad_name)
    data = bad_name.read_bytes()
    at = data.index(b"abc", offset)
    patch(bad_name, at, b"\xff")
    with pytest.raises(qcow2.Unsupported, match="entry 0"):
        qcow2.read_snapshots(bad_name)


def test_offline_backend_reads_the_table_and_falls_back(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    plain = make(tmp_path / "p.qcow2", "s1")
    external = make(tmp_path / "ext.qcow2", extra=f"data_file={tmp_path / 'ext.raw'}")
    asked: list[str] = []
    real = backends.qemu_img.snapshots

    def spy(path: Any, *, what: str) -> list[dict[str, Any]]:
        asked.append(str(path))
        return real(path, what=what)

    monkeypatch.setattr(backends.qemu_img, "snapshots", spy)
    offline = backends.Offline("vm1", 10.0)
    got = offline.snapshots([Disk("a", "qcow2", str(plain), False),
                             Disk("b", "qcow2", str(external), False)])
    assert [s["name"] for s in got["a"]] == ["s1"]
    assert got["b"] == []  # from qemu-img
    assert asked == [str(external)]
