"""OpenSSH public key lines: parse, check, fingerprint.

A line is ``[options] TYPE BASE64 [comment]`` (``sshd(8)``, AUTHORIZED_KEYS FILE FORMAT).
The check goes beyond the shape: the base64 must decode to the SSH wire form of a key
(RFC 4253 6.6: a sequence of length-prefixed strings filling the blob exactly) whose first
string repeats TYPE. That catches a key cut short by a copy and paste, a line-wrapped
console, or a stray character, which a regular expression alone would let through.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import NamedTuple

from maqet_engine import constants as C

__all__ = ["PublicKey", "fingerprint", "parse_public_key"]

_TYPES = "|".join(re.escape(t) for t in sorted(C.SSH_KEY_TYPES, key=len, reverse=True))
_LINE = re.compile(
    rf"(?:(?P<options>\S.*?)\s+)??(?P<type>{_TYPES})\s+(?P<b64>[A-Za-z0-9+/]+={{0,2}})"
    r"(?:\s+(?P<comment>\S.*?))?\s*"
)
_PRIVATE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


class PublicKey(NamedTuple):
    """One parsed public key line."""

    key_type: str
    b64: str
    comment: str = ""
    options: str = ""

    @property
    def key(self) -> str:
        """``TYPE BASE64``: the key without options or comment (known_hosts form)."""
        return f"{self.key_type} {self.b64}"

    @property
    def line(self) -> str:
        """The canonical line: single spaces between options, key and comment."""
        return " ".join(part for part in (self.options, self.key, self.comment) if part)


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line.

    :raise ValueError: with a short reason that says what is wrong with it.
    """
    if _PRIVATE.search(text):
        raise ValueError("is a private key; give the public key (the line in the .pub file)")
    stripped = text.strip()
    if not stripped:
        raise ValueError("is empty")
    if len(stripped) > C.SSH_KEY_LINE_MAX:
        raise ValueError(f"is longer than {C.SSH_KEY_LINE_MAX} characters; give one key line")
    if "\n" in stripped or "\r" in stripped:
        raise ValueError("spans several lines; give one key per list item")
    found = _LINE.fullmatch(stripped)
    if found is None:
        raise ValueError("does not look like an OpenSSH public key "
                         f"('TYPE BASE64 [comment]' with TYPE one of {_type_list()})")
    key = PublicKey(found["type"], found["b64"], found["comment"] or "",
                    found["options"] or "")
    _check_blob(key.key_type, key.b64)
    return key


def fingerprint(key: str | PublicKey) -> str:
    """The SHA256 fingerprint as ``ssh-keygen -l`` prints it: ``SHA256:<base64, no padding>``.

    :raise ValueError: ``key`` is a string that is not a public key line.
    """
    import hashlib  # here: parsing keys (the runner does) must not load libcrypto

    parsed = parse_public_key(key) if isinstance(key, str) else key
    digest = hashlib.sha256(base64.b64decode(parsed.b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_blob(key_type: str, b64: str) -> None:
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("has a broken base64 part (cut short or mistyped?)") from None
    strings: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise ValueError("has a truncated key (the base64 part is cut short)")
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            raise ValueError("has a truncated key (the base64 part is cut short)")
        strings.append(blob[offset:offset + length])
        offset += length
    if len(strings) < 2 or strings[0] != key_type.encode("ascii"):
        raise ValueError(f"has a base64 part that is not a {key_type} key")


def _type_list() -> str:
    return ", ".join(sorted(C.SSH_KEY_TYPES))
