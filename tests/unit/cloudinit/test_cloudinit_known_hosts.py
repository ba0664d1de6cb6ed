"""known_hosts entries: host patterns, lines, and the file (atomic, mode 0600)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from maqet_engine.cloudinit import (
    host_key_alias,
    host_pattern,
    known_hosts_lines,
    read_known_hosts,
    write_known_hosts,
)


@pytest.mark.parametrize(("host", "port", "pattern"), [
    ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
    ("::1", 2222, "[::1]:2222"),
    ("web1", 22, "web1"),
    ("localhost", 1, "[localhost]:1"),
])
def test_host_pattern(host: str, port: int, pattern: str):
    assert host_pattern(host, port) == pattern


@pytest.mark.parametrize(("host", "port"), [("", 22), ("a b", 22), ("a,b", 22), ("h", 0),
                                            ("h", 65536), ("h", True)])
def test_host_pattern_refuses(host: str, port: int):
    with pytest.raises(ValueError):
        host_pattern(host, port)


def test_host_key_alias_names_a_vm_whatever_its_address(ed25519: str):
    assert host_key_alias("web1.lab") == "maqet-vm-web1.lab"
    assert known_hosts_lines(["[127.0.0.1]:2222", host_key_alias("web1")], [ed25519]) == [
        f"[127.0.0.1]:2222,maqet-vm-web1 {' '.join(ed25519.split()[:2])}"]
    with pytest.raises(ValueError):
        host_key_alias("a,b")


def test_known_hosts_lines(ed25519: str, rsa: str):
    lines = known_hosts_lines(["[127.0.0.1]:2222", "[localhost]:2222"],
                              [ed25519, " ".join(ed25519.split()[:2]), rsa])
    ed_key = " ".join(ed25519.split()[:2])
    assert lines == [f"[127.0.0.1]:2222,[localhost]:2222 {ed_key}",
                     f"[127.0.0.1]:2222,[localhost]:2222 {' '.join(rsa.split()[:2])}"]


@pytest.mark.parametrize("patterns", [[], "[127.0.0.1]:2222", ["a b"], [""]])
def test_known_hosts_lines_refuses_bad_patterns(patterns: list[str], ed25519: str):
    with pytest.raises(ValueError):
        known_hosts_lines(patterns, [ed25519])


def test_known_hosts_lines_refuses_a_broken_key():
    with pytest.raises(ValueError, match="does not look like"):
        known_hosts_lines(["h"], ["ssh-ed25519"])


def test_a_symlink_at_the_target_is_replaced_never_followed(tmp_path: Path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "known_hosts"
    link.symlink_to(victim)
    assert write_known_hosts(link, ["h ssh-ed25519 AAAA"])
    assert victim.read_bytes() == b"keep"
    assert not link.is_symlink()
    assert link.read_text() == "h ssh-ed25519 AAAA\n"


def test_write_known_hosts(tmp_path: Path, ed25519: str):
    path = tmp_path / "known_hosts"
    lines = known_hosts_lines([host_pattern("127.0.0.1", 2222)], [ed25519])
    assert write_known_hosts(path, lines)
    assert path.read_text() == f"[127.0.0.1]:2222 {' '.join(ed25519.split()[:2])}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not write_known_hosts(path, lines)


def test_read_known_hosts_gives_the_keys_back(tmp_path: Path, ed25519: str, rsa: str):
    path = tmp_path / "known_hosts"
    assert read_known_hosts(path) == []  # no file yet
    lines = known_hosts_lines(["[127.0.0.1]:2222", "[10.0.0.1]:2222"], [ed25519, rsa])
    write_known_hosts(path, ["# a comment", *lines, "@revoked * " + rsa, "web1 not-a-key",
                             "", lines[0]])
    assert read_known_hosts(path) == [" ".join(ed25519.split()[:2]), " ".join(rsa.split()[:2])]
