"""Fixtures of the cloud-init tests: real OpenSSH public keys (made by ssh-keygen)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().with_name("data")

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINjdOVyhCHuxWRHXdl4TleBWHlnhseLcB6KFFD4MBTA4 "
           "me@laptop")
RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCiS0CIexc/9/0f0SimK8R2GqCfCYZfMlP1xy2R6SqnczFT6UXl"
       "K0cpYQcI9iKjIKNXJWWrApdoX/CEkRGYWiqU17eszZJT0C4f0ri4Ny4hEOand9s4JxiUoz27HrtemDxSa0crWZ0D"
       "7fUv9BnlmrLRnYZy8ZH/KgRP3GmoVQ9fOUfm7H4CivLQejkyNAAR4dBzP7xIIpD7kmD42GcEgauIyLMHEV2F4ipq"
       "LQUJySD8uUUmwQwMIO8LcPUpAlOOGafG0Q2g7HD0CAcmNV/uZeg0te4ko6CHW+WWaNXz8qxqXWTvhZAqnSKIFF7v"
       "J9Soa27+1JD0EfIQlO0MvJbFI85v ops@desk")
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKdPf0Ad8B4J2/"
         "2v6H2GidmnAqoXQFndQ9JrI6h62i+1ESUoAA5LF2cdUcljRGCwwyGdvOVNtIAPUbVJt6VOb/4=")


@pytest.fixture
def ed25519() -> str:
    return ED25519


@pytest.fixture
def rsa() -> str:
    return RSA


@pytest.fixture
def ecdsa() -> str:
    return ECDSA


@pytest.fixture
def data_dir() -> Path:
    return DATA
