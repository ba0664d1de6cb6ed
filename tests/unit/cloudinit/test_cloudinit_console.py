"""Host keys and fingerprints from a serial console log.

``data/console-two-boots.log`` is a raw serial capture (CRLF line ends, escape sequences)
in the format cloud-init 22.4's ``write-ssh-key-fingerprints`` prints, of two boots of a
VM whose instance changed in between (new host keys). In the second boot a kernel
message cuts the ed25519 key line in two, and a kernel line stands between two keys.
The keys and fingerprints in it were made with ssh-keygen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maqet_engine.cloudinit import (
    HostKeyFingerprint,
    fingerprint,
    fingerprints_from_console,
    host_keys_from_console,
)

BEGIN, END = "-----BEGIN SSH HOST KEY KEYS-----", "-----END SSH HOST KEY KEYS-----"


@pytest.fixture
def log(data_dir: Path) -> str:
    return (data_dir / "console-two-boots.log").read_bytes().decode()


def _keys(data_dir: Path, boot: int) -> list[str]:
    return (data_dir / f"console-two-boots.boot{boot}.keys").read_text().splitlines()


def test_the_fixture_is_a_raw_serial_capture(log: str):
    assert "\r\n" in log and "\x1b[" in log
    assert log.count(BEGIN) == 2


def test_the_last_boot_wins_even_with_a_key_line_cut_by_the_kernel(log: str, data_dir: Path):
    assert "crng init done\r\nE5AAAA" in log  # the cut is really there
    assert host_keys_from_console(log) == _keys(data_dir, 2)


def test_one_boot_alone(log: str, data_dir: Path):
    first_boot = log[:log.index("reboot: Restarting system")]
    assert host_keys_from_console(first_boot) == _keys(data_dir, 1)


def test_an_unfinished_block_does_not_hide_the_last_complete_one(log: str, data_dir: Path):
    cut = log.rindex(END)  # the second block is still being printed
    assert host_keys_from_console(log[:cut]) == _keys(data_dir, 1)
    assert host_keys_from_console(log[:log.index(END)]) == []


def test_fingerprints_of_the_last_boot_match_its_keys(log: str, data_dir: Path):
    prints = fingerprints_from_console(log)
    assert [(p.bits, p.key_type, p.comment) for p in prints] == [
        (256, "ECDSA", "root@web1"), (256, "ED25519", "root@web1"), (3072, "RSA", "root@web1")]
    assert [p.fingerprint for p in prints] == [fingerprint(k) for k in _keys(data_dir, 2)]


def test_fingerprints_block_without_syslog_prefix_and_with_no_comment():
    text = ("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            "ec2: 256 SHA256:H5ttGkRNh6LZnn2fCldooJB44Kk7z8gChcXh+jGnlTs no comment (ED25519)\n"
            "1024 MD5:aa:bb:cc (DSA)\n"
            "-----END SSH HOST KEY FINGERPRINTS-----\n")
    assert fingerprints_from_console(text) == [
        HostKeyFingerprint(256, "SHA256:H5ttGkRNh6LZnn2fCldooJB44Kk7z8gChcXh+jGnlTs",
                           "no comment", "ED25519"),
        HostKeyFingerprint(1024, "MD5:aa:bb:cc", "", "DSA"),
    ]


def test_no_block_no_keys():
    assert host_keys_from_console("") == []
    assert host_keys_from_console("[    0.000000] Linux version 6.1\r\nlogin: ") == []
    assert fingerprints_from_console("nothing") == []


def test_keys_with_a_logger_prefix_colours_and_systemd_lines(ed25519: str, ecdsa: str):
    text = (f"<14>Nov 30 12:00:01 ec2: {BEGIN}\r\n"
            f"<14>Nov 30 12:00:01 ec2: \x1b[1m{ed25519}\x1b[0m\r\n"
            "[\x1b[0;32m  OK  \x1b[0m] Started ssh.service - OpenBSD Secure Shell server.\r\n"
            f"{ecdsa}\r\n"
            f"<14>Nov 30 12:00:01 ec2: {END}\r\n")
    assert host_keys_from_console(text) == [" ".join(ed25519.split()[:2]), ecdsa]


def test_damaged_lines_are_skipped_never_returned(ed25519: str, rsa: str):
    broken = rsa[:120]  # the console lost the rest of the line
    text = "\n".join([BEGIN, broken, "random text", f'command="x" {ed25519}', ed25519,
                      ed25519, END])
    # the truncated key is dropped, options are no host key, duplicates count once
    assert host_keys_from_console(text) == [" ".join(ed25519.split()[:2])]


def test_a_new_begin_abandons_an_unfinished_block(ed25519: str, rsa: str):
    text = "\n".join([BEGIN, rsa, BEGIN, ed25519, END])
    assert host_keys_from_console(text) == [" ".join(ed25519.split()[:2])]


def test_pathological_input_is_parsed_quickly(ed25519: str):
    """Long runs that the patterns could backtrack on (blank columns, '[', key-like junk)."""
    import time

    junk = "[" + " " * 50_000 + "\n" + "ssh-rsa " + "A" * 50_000 + "\n" + "[ 1.0" * 10_000
    text = "\n".join([BEGIN, junk, ed25519, END])
    start = time.monotonic()
    assert host_keys_from_console(text * 20) == [" ".join(ed25519.split()[:2])]
    assert time.monotonic() - start < 2.0
