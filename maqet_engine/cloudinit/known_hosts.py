"""OpenSSH known_hosts entries for a VM's host keys (``sshd(8)``, SSH_KNOWN_HOSTS FILE FORMAT)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.cloudinit.files import write_atomic
from maqet_engine.cloudinit.sshkeys import parse_public_key

__all__ = ["distinct_keys", "host_key_alias", "host_pattern", "known_hosts_entries",
           "known_hosts_lines", "read_known_hosts", "write_known_hosts"]


def host_pattern(host: str, port: int = C.SSH_DEFAULT_PORT) -> str:
    """How known_hosts names ``host`` at ``port``: ``web1``, ``[127.0.0.1]:2222``, ``[::1]:2222``.

    :raise ValueError: an empty host, one with blanks or commas, or a port out of range.
    """
    _check_host(host)
    if isinstance(port, bool) or not isinstance(port, int) or not C.PORT_MIN <= port <= C.PORT_MAX:
        raise ValueError(f"port {port!r} is not from {C.PORT_MIN} to {C.PORT_MAX}")
    if port == C.SSH_DEFAULT_PORT:
        return host
    return f"[{host}]:{port}"


def host_key_alias(vm_name: str) -> str:
    """The name VM ``vm_name``'s known_hosts holds its guest's keys under besides the forwards'
    ``[127.0.0.1]:PORT``: ``maqet-vm-NAME``, for ``ssh -o HostKeyAlias=maqet-vm-NAME`` when
    the guest is reached at an address of its own (a ``bridged`` or ``tap`` network), which
    maqet does not know when it writes the file. The key is then checked against what this
    VM's console printed, whatever address the connection goes to.

    :raise ValueError: a name that cannot be a known_hosts pattern (blanks, commas).
    """
    alias = f"{C.HOST_KEY_ALIAS_PREFIX}{vm_name}"
    _check_host(alias)
    return alias


def known_hosts_lines(host_patterns: Sequence[str], keys: Iterable[str]) -> list[str]:
    """One ``PATTERNS TYPE BASE64`` line per distinct key, all patterns comma-joined.

    :param host_patterns: as :func:`host_pattern` makes them (``[127.0.0.1]:2222``).
    :param keys: public key lines (a comment is dropped), e.g. from the console.
    :raise ValueError: no pattern, a malformed pattern, or a key that is not a public key.
    """
    if isinstance(host_patterns, str) or not host_patterns:
        raise ValueError("give a list of one or more host patterns")
    for pattern in host_patterns:
        _check_host(pattern)
    hosts = ",".join(host_patterns)
    lines: list[str] = []
    for key in keys:
        line = f"{hosts} {parse_public_key(key).key}"
        if line not in lines:
            lines.append(line)
    return lines


def write_known_hosts(path: str | os.PathLike[str], lines: Iterable[str]) -> bool:
    """Write ``lines`` as a known_hosts file atomically, mode 0600; False if unchanged.

    :raise HostError: the file cannot be written.
    """
    text = "".join(f"{line}\n" for line in lines)
    return write_atomic(Path(path), text.encode("utf-8"))


def known_hosts_entries(path: str | os.PathLike[str]) -> list[tuple[tuple[str, ...], str]]:
    """Each line of a known_hosts file as ``(host patterns, key)`` (``TYPE BASE64``), in
    order; ``[]`` when the file does not exist. Comments, markers (``@cert-authority``,
    ``@revoked``) and lines that are not a valid public key are skipped.

    :raise OSError: the file exists but cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        fields = line.split(None, 1)
        if len(fields) < 2 or line.lstrip().startswith(("#", "@")):
            continue
        try:
            key = parse_public_key(fields[1]).key
        except ValueError:
            continue
        entries.append((tuple(fields[0].split(",")), key))
    return entries


def distinct_keys(entries: Iterable[tuple[tuple[str, ...], str]]) -> list[str]:
    """The keys of :func:`known_hosts_entries`, each once, in order."""
    return list(dict.fromkeys(key for _patterns, key in entries))


def read_known_hosts(path: str | os.PathLike[str]) -> list[str]:
    """The distinct keys (``TYPE BASE64``) of a known_hosts file, in order; ``[]`` when the
    file does not exist (see :func:`known_hosts_entries`).

    :raise OSError: the file exists but cannot be read.
    """
    return distinct_keys(known_hosts_entries(path))


def _check_host(host: str) -> None:
    if not isinstance(host, str) or not host or any(c.isspace() or c == "," for c in host):
        raise ValueError(f"host {host!r} is empty or has blanks or commas")
