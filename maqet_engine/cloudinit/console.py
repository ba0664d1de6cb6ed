"""Reading the SSH host keys cloud-init prints on the serial console.

cloud-init's ``keys_to_console`` module runs ``write-ssh-key-fingerprints`` once per
instance, which prints (the fingerprint lines pass through ``logger --stderr``, so they
carry a syslog prefix; the tag is ``ec2`` in older releases)::

    <14>Nov 30 12:00:01 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
    <14>Nov 30 12:00:01 cloud-init: 256 SHA256:8KKn...MWJQ root@web1 (ED25519)
    <14>Nov 30 12:00:01 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
    -----BEGIN SSH HOST KEY KEYS-----
    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtO... root@web1
    -----END SSH HOST KEY KEYS-----

A serial console mixes that with kernel messages, which may even cut a line in two
(``ssh-ed25519 AAAA[   12.3] random: crng init done`` newline ``C3Nz...``), systemd's
coloured status lines and ``\\r\\n`` line ends. The parser removes escape sequences,
carriage returns and timestamped kernel messages wherever they stand (rejoining a cut
line), then reads the **last complete** block: a log with two boots yields the keys of
the later one, and a block still being printed is not taken for a complete one. Every
key is checked (see :mod:`maqet_engine.cloudinit.sshkeys`); a line that is not a whole,
valid key is skipped rather than returned damaged.

Not handled: consoles that hard-wrap long lines (some cloud "console output" APIs do at
80 columns); a QEMU serial log never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from maqet_engine.cloudinit.sshkeys import parse_public_key

__all__ = ["HostKeyFingerprint", "fingerprints_from_console", "host_keys_from_console"]

KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
KEYS_END = "-----END SSH HOST KEY KEYS-----"
FINGERPRINTS_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
FINGERPRINTS_END = "-----END SSH HOST KEY FINGERPRINTS-----"

# CSI (colours, cursor), OSC (titles) and two-byte escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# A timestamped kernel message, or a systemd status line (its status is 6 columns wide),
# up to and including its newline: removed wherever it starts, so a user-space line it
# interrupted is joined back together.
_INTERJECTIONS = re.compile(
    r"\[ *\d+\.\d+\] [^\n]*(?:\n|\Z)"
    r"|\[(?:  OK  |FAILED|DEPEND| TIME | WARN |[* ]{6})\] [^\n]*(?:\n|\Z)"
)
# What `logger --stderr` puts before each line: optional <PRI>, a timestamp, the tag.
_SYSLOG_PREFIX = re.compile(
    r"^(?:<\d{1,3}>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?(?:ec2|cloud-init)(?:\[\d+\])?: ?"
)
_FINGERPRINT_LINE = re.compile(
    r"(?P<bits>\d+) (?P<fingerprint>[A-Z0-9]+:\S+) (?:(?P<comment>.*?) )?\((?P<type>[A-Z0-9-]+)\)"
)


class HostKeyFingerprint(NamedTuple):
    """One line of the fingerprints block (``ssh-keygen -l`` output)."""

    bits: int
    fingerprint: str  # "SHA256:..."
    comment: str
    key_type: str  # as ssh-keygen names it: ED25519, ECDSA, RSA, DSA, ...


def host_keys_from_console(text: str) -> list[str]:
    """The host keys of the last complete keys block in ``text``, as ``TYPE BASE64`` lines.

    Empty when no complete block is there (yet). Duplicates are dropped, order is kept.
    """
    keys: list[str] = []
    for line in _last_block(text, KEYS_BEGIN, KEYS_END):
        try:
            key = parse_public_key(line)
        except ValueError:
            continue
        if not key.options and key.key not in keys:
            keys.append(key.key)
    return keys


def fingerprints_from_console(text: str) -> list[HostKeyFingerprint]:
    """The lines of the last complete fingerprints block in ``text`` (empty when none)."""
    found: list[HostKeyFingerprint] = []
    for line in _last_block(text, FINGERPRINTS_BEGIN, FINGERPRINTS_END):
        match = _FINGERPRINT_LINE.fullmatch(line)
        if match:
            found.append(HostKeyFingerprint(int(match["bits"]), match["fingerprint"],
                                            match["comment"] or "", match["type"]))
    return found


def _last_block(text: str, begin: str, end: str) -> list[str]:
    """The lines between the last ``begin`` line that an ``end`` line closes, and that end."""
    last: list[str] = []
    current: list[str] | None = None
    for line in _clean_lines(text):
        if begin in line:
            current = []  # a new block; an unfinished earlier one is abandoned
        elif end in line:
            if current is not None:
                last = current
            current = None
        elif current is not None and line:
            current.append(line)
    return last


def _clean_lines(text: str) -> Iterator[str]:
    text = _ESCAPES.sub("", text).replace("\r", "")
    text = _INTERJECTIONS.sub("", text)
    for line in text.split("\n"):
        yield _SYSLOG_PREFIX.sub("", line).strip()
