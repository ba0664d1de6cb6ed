"""Fixtures of the multi-host tests: hypervisor hosts in network namespaces, each with its
own sshd (tests/support/netns.py). Needs root, openssh-server and iproute2; a missing
piece fails the test (bash scripts/setup.sh installs them), it never skips."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns import Hypervisors  # tests/support, on sys.path through tests/conftest.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multihost: builds hypervisor hosts in network namespaces with their own "
        "sshd (root, openssh-server, iproute2)")


@pytest.fixture
def hypervisors() -> Iterator[Hypervisors]:
    """Two hosts, hv1 and hv2, up and answering SSH; all gone after the test."""
    hv = Hypervisors(2)
    with hv:
        yield hv
    assert not hv.leftovers(), "the harness left something behind"
