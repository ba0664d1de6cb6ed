"""Format detection from the content: real images made by qemu-img, raw disks, and what
must never be taken for a disk (web pages, text, empty files, overlays, encryption,
compressed files); the name never matters."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from maqet_engine.errors import ConfigError
from maqet_engine.images.detect import DiskFormat, detect_format

MiB = 1024 * 1024


def img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        detect_format(path, what="image X")
    message = str(info.value)
    assert message.startswith("image X: ") and "\n" not in message
    return message


@pytest.mark.qemu
@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_qcow2_made_by_qemu_img_whatever_its_name(tmp_path: Path, compat: str):
    path = tmp_path / "looks-raw.img"
    img("create", "-q", "-f", "qcow2", "-o", f"compat={compat}", str(path), "100M")
    assert detect_format(path) == DiskFormat(format="qcow2", virtual_size=100 * MiB)


@pytest.mark.qemu
def test_raw_made_by_qemu_img_and_a_real_boot_sector(tmp_path: Path):
    path = tmp_path / "looks.qcow2"
    img("create", "-q", "-f", "raw", str(path), "3M")
    assert detect_format(path) == DiskFormat(format="raw", virtual_size=3 * MiB)
    mbr = tmp_path / "mbr.raw"
    mbr.write_bytes(b"\xfa\x31\xc0" + os.urandom(440) + b"\x00" * 67 + b"\x55\xaa"
                    + b"\x00" * (MiB - 512))
    assert detect_format(mbr).format == "raw"


@pytest.mark.qemu
def test_qcow2_with_a_backing_file_is_refused(tmp_path: Path):
    base = tmp_path / "base.qcow2"
    img("create", "-q", "-f", "qcow2", str(base), "16M")
    overlay = tmp_path / "overlay.qcow2"
    img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))
    message = refused(overlay)
    assert f"is a qcow2 overlay on a backing file ({base})" in message
    assert "qemu-img convert" in message


@pytest.mark.qemu
def test_luks_and_encrypted_qcow2_are_refused(tmp_path: Path):
    # qemu-img's LUKS key-derivation benchmark makes `create -f luks` slow and flaky
    # ("Unable to get accurate CPU usage"): a LUKS2 header's first bytes stand in for it.
    luks = tmp_path / "disk.img"
    luks.write_bytes(b"LUKS\xba\xbe\x00\x02" + b"\x00" * (MiB - 8))
    assert "is a LUKS-encrypted image" in refused(luks)
    enc = tmp_path / "enc.qcow2"
    img("create", "-q", "--object", "secret,id=s0,data=password", "-f", "qcow2", "-o",
        "encrypt.format=aes,encrypt.key-secret=s0", str(enc), "1M")
    assert "is an encrypted qcow2 image" in refused(enc)


@pytest.mark.qemu
def test_dirty_or_corrupt_qcow2_is_refused(tmp_path: Path):
    path = tmp_path / "a.qcow2"
    img("create", "-q", "-f", "qcow2", str(path), "16M")
    with open(path, "r+b") as fh:
        fh.seek(72)  # incompatible_features
        fh.write((2).to_bytes(8, "big"))  # corrupt
    assert "incompatible features 0x2" in refused(path)


def test_html_pages_and_text_are_refused(tmp_path: Path):
    page = tmp_path / "disk.qcow2"
    page.write_bytes(b"\n  <!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n"
                     + b" " * 452)  # a whole sector: size alone would not tell
    assert "is an HTML page, not a disk image" in refused(page)
    text = tmp_path / "disk.raw"
    text.write_text("ünïcode text " * 1000)  # longer than what is sniffed, cut mid-character
    assert "is a text file" in refused(text)


def test_empty_and_odd_sized_files_are_refused(tmp_path: Path):
    empty = tmp_path / "empty.img"
    empty.touch()
    assert "the file is empty" in refused(empty)
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\x00" * 1000)
    assert "is 1000 bytes, not a whole number of 512-byte sectors" in refused(odd)


@pytest.mark.parametrize("head, words", [
    (b"\xfd7zXZ\x00", "is xz-compressed"),
    (b"\x1f\x8b\x08", "is gzip-compressed"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed"),
    (b"KDMV\x01\x00\x00\x00", "is a VMDK image"),
    (b"vhdxfile", "is a VHDX image"),
    (b"\x00" * 257 + b"ustar\x0000", "is a tar archive"),
])
def test_other_formats_are_refused(tmp_path: Path, head: bytes, words: str):
    path = tmp_path / "x.img"
    path.write_bytes(head + b"\x00" * (4096 - len(head)))
    assert words in refused(path)


def test_a_truncated_qcow2_header_is_refused(tmp_path: Path):
    path = tmp_path / "cut.qcow2"
    path.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\x00" * 20)
    assert "is a damaged qcow2 image" in refused(path)


def test_symlinks_are_not_followed(tmp_path: Path):
    real = tmp_path / "real.raw"
    real.write_bytes(b"\x00" * 512)
    link = tmp_path / "link.raw"
    link.symlink_to(real)
    with pytest.raises(OSError):
        detect_format(link)
