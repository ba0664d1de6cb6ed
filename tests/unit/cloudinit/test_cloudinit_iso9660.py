"""The ISO 9660 writer, read back by a small reader written from ECMA-119 in this test
(independent tools read the same images in tests/integration/cloudinit)."""

from __future__ import annotations

import os
import struct
import time

import pytest

from maqet_engine.cloudinit.iso9660 import MAX_FILES, MIN_SECTORS, SECTOR, build_iso

FILES = [("user-data", b"#cloud-config\n{}\n"), ("meta-data", b"instance-id: i\n"),
         ("network-config", b"version: 2\n" * 300)]  # one file longer than a sector


def _descriptor(image: bytes, index: int) -> bytes:
    return image[(16 + index) * SECTOR:(17 + index) * SECTOR]


def _records(image: bytes, sector: int) -> list[dict[str, object]]:
    """The directory records of the one-sector directory at ``sector``."""
    data = image[sector * SECTOR:(sector + 1) * SECTOR]
    out, offset = [], 0
    while offset < len(data) and data[offset]:
        size = data[offset]
        record = data[offset:offset + size]
        name_len = record[32]
        name = record[33:33 + name_len]
        su_start = 33 + name_len + (1 - name_len % 2)
        extent, length = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record,
                                                                                  10)[0]
        assert struct.unpack_from(">I", record, 6)[0] == extent  # both-endian fields agree
        assert struct.unpack_from(">I", record, 14)[0] == length
        out.append({"name": name, "extent": extent, "length": length, "flags": record[25],
                    "date": record[18:25], "su": record[su_start:]})
        offset += size
    return out


def _susp(su: bytes) -> dict[str, bytes]:
    entries, offset = {}, 0
    while offset + 4 <= len(su):
        size = su[offset + 2]
        entries[su[offset:offset + 2].decode()] = su[offset + 4:offset + size]
        offset += size
    return entries


def test_descriptors_label_and_size():
    image = build_iso(FILES, volume_id="cidata")
    pvd, svd, term = (_descriptor(image, i) for i in range(3))
    assert pvd[:7] == b"\x01CD001\x01"
    assert svd[:7] == b"\x02CD001\x01"
    assert term[:7] == b"\xffCD001\x01"
    assert pvd[40:72] == b"cidata".ljust(32)
    assert svd[40:72] == "cidata".encode("utf-16-be") + b"\x00 " * 10
    assert svd[88:91] == b"%/E"  # Joliet, UCS-2 level 3
    blocks = struct.unpack_from("<I", pvd, 80)[0]
    assert len(image) == blocks * SECTOR
    assert blocks == MIN_SECTORS  # small seeds are padded up to the minimum
    assert pvd[813:830] == b"1980010100000000\x00"  # creation date: fixed, UTC


def test_primary_tree_has_rock_ridge_names_and_exact_content():
    image = build_iso(FILES, volume_id="cidata")
    root_sector = struct.unpack_from("<I", _descriptor(image, 0), 156 + 2)[0]
    records = _records(image, root_sector)
    dot, dotdot, *files = records
    assert dot["name"] == b"\x00" and dotdot["name"] == b"\x01"
    assert dot["flags"] == 2
    root_su = _susp(dot["su"])  # type: ignore[arg-type]
    assert root_su["SP"] == b"\xbe\xef\x00"
    ce = root_su["CE"]
    cont_sector, cont_len = struct.unpack_from("<I", ce, 0)[0], struct.unpack_from("<I", ce, 16)[0]
    er = image[cont_sector * SECTOR:cont_sector * SECTOR + cont_len]
    assert er[:2] == b"ER" and b"RRIP_1991A" in er
    names = {}
    for record in files:
        su = _susp(record["su"])  # type: ignore[arg-type]
        real = su["NM"][1:].decode()
        names[record["name"]] = real
        mode = struct.unpack_from("<I", su["PX"], 0)[0]
        assert mode == 0o100444
        start, length = record["extent"], record["length"]
        assert image[start * SECTOR:start * SECTOR + length] == dict(FILES)[real]  # type: ignore[operator]
        assert record["date"] == bytes([80, 1, 1, 0, 0, 0, 0])
    assert names == {b"META_DAT.;1": "meta-data", b"NETWORK_.;1": "network-config",
                     b"USER_DAT.;1": "user-data"}
    assert list(names) == sorted(names)  # ECMA-119 9.3 order


def test_joliet_tree_has_the_same_files():
    image = build_iso(FILES, volume_id="cidata")
    root_sector = struct.unpack_from("<I", _descriptor(image, 1), 156 + 2)[0]
    files = _records(image, root_sector)[2:]
    names = [record["name"].decode("utf-16-be") for record in files]  # type: ignore[union-attr]
    assert names == ["meta-data", "network-config", "user-data"]
    for record, name in zip(files, names, strict=True):
        start, length = record["extent"], record["length"]
        assert image[start * SECTOR:start * SECTOR + length] == dict(FILES)[name]  # type: ignore[operator]


def test_path_tables_point_at_the_roots():
    image = build_iso(FILES, volume_id="cidata")
    for index in (0, 1):
        vd = _descriptor(image, index)
        root = struct.unpack_from("<I", vd, 158)[0]
        l_table = struct.unpack_from("<I", vd, 140)[0]
        m_table = struct.unpack_from(">I", vd, 148)[0]
        assert image[l_table * SECTOR:l_table * SECTOR + 8] == bytes([1, 0]) + struct.pack(
            "<IH", root, 1)
        assert image[m_table * SECTOR:m_table * SECTOR + 8] == bytes([1, 0]) + struct.pack(
            ">IH", root, 1)


def test_output_does_not_depend_on_the_clock_or_time_zone(monkeypatch: pytest.MonkeyPatch):
    first = build_iso(FILES, volume_id="cidata")
    try:
        for zone in ("UTC", "America/New_York", "Asia/Kolkata"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            assert build_iso(FILES, volume_id="cidata") == first
    finally:
        monkeypatch.undo()
        time.tzset()


def test_large_files_get_contiguous_sectors():
    big = os.urandom(3 * SECTOR + 5)
    image = build_iso([("a", big), ("b", b"x")], volume_id="cidata")
    assert len(image) == MIN_SECTORS * SECTOR
    huge = build_iso([("a", bytes(MIN_SECTORS * SECTOR))], volume_id="cidata")
    assert len(huge) == (26 + MIN_SECTORS) * SECTOR  # data past the minimum: no padding


def test_an_empty_file_takes_no_sector():
    image = build_iso([("empty", b""), ("x", b"1")], volume_id="v")
    root_sector = struct.unpack_from("<I", _descriptor(image, 0), 158)[0]
    empty = [r for r in _records(image, root_sector) if r["name"] == b"EMPTY.;1"][0]
    assert empty["length"] == 0 and empty["extent"] == 0


def test_level1_names_are_made_unique():
    image = build_iso([("user-data-a", b"1"), ("user-data-b", b"2")], volume_id="v")
    root_sector = struct.unpack_from("<I", _descriptor(image, 0), 158)[0]
    names = sorted(r["name"] for r in _records(image, root_sector)[2:])  # type: ignore[type-var]
    assert names == [b"USER_DA1.;1", b"USER_DAT.;1"]


@pytest.mark.parametrize(("files", "volume_id", "message"), [
    ([], "cidata", "1 to"),
    ([("a", b"")] * 2, "cidata", "duplicate"),
    ([("a/b", b"")], "cidata", "is not 1-64"),
    ([(".hidden", b"")], "cidata", "is not 1-64"),
    ([("x" * 65, b"")], "cidata", "is not 1-64"),
    ([("a", b"")], "", "volume id"),
    ([("a", b"")], "x" * 17, "volume id"),
    ([("a", b"")], "ci data", "volume id"),
    ([(f"f{i}", b"") for i in range(MAX_FILES + 1)], "cidata", "1 to"),
])
def test_bad_input_is_refused(files: list[tuple[str, bytes]], volume_id: str, message: str):
    with pytest.raises(ValueError, match=message):
        build_iso(files, volume_id=volume_id)


def test_too_many_long_names_for_one_sector_are_refused():
    files = [(f"{i:02d}" + "n" * 62, b"") for i in range(MAX_FILES)]
    with pytest.raises(ValueError, match="do not fit one directory sector"):
        build_iso(files, volume_id="v")
