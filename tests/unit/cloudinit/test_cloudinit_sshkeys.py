"""OpenSSH public key lines: parts, checks, fingerprints."""

from __future__ import annotations

import pytest

from maqet_engine.cloudinit.sshkeys import fingerprint, parse_public_key


def test_parse_public_key_parts(ed25519: str):
    key = parse_public_key(f'no-pty,from="10.0.0.1"   {ed25519}\n')
    assert key.options == 'no-pty,from="10.0.0.1"'
    assert key.key_type == "ssh-ed25519" and key.comment == "me@laptop"
    assert key.line == f'no-pty,from="10.0.0.1" {ed25519}'


def test_a_comment_that_names_a_key_type_is_still_a_comment(ed25519: str):
    assert parse_public_key(f"{ed25519} ssh-rsa backup").comment == "me@laptop ssh-rsa backup"


def test_fingerprints_match_ssh_keygen(ed25519: str, rsa: str, ecdsa: str):
    # `ssh-keygen -l` printed these for the fixture keys
    assert fingerprint(ed25519) == "SHA256:w0EkjTQwlfZIYVtG9V3EYROcDitk8ljR+gjGKJMIO5s"
    assert fingerprint(rsa) == "SHA256:B6FQp3XH7eJWAivOuySf+gfpnhyv8pI7ym+KL+RhSVI"
    assert (fingerprint(parse_public_key(ecdsa))
            == "SHA256:3wYW6lwhcxHDAcOMsAPZ+19bWksVN1EbUBDEcE0yh4w")


@pytest.mark.parametrize(("line", "reason"), [
    ("", "is empty"),
    ("ssh-ed25519 AAAA\nssh-rsa AAAA", "spans several lines"),
    ("ssh-foo AAAAC3NzaC1lZDI1NTE5 x", "does not look like"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4Tle=x", "does not look like"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBW", "truncated"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE", "broken base64"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "not a ssh-ed25519 key"),
    ("ssh-rsa " + "A" * 9000, "longer than 8192"),
])
def test_parse_public_key_refuses(line: str, reason: str):
    with pytest.raises(ValueError, match=reason):
        parse_public_key(line)
