"""Which QMP commands only read (never "changed"): one rule, in the engine."""

from __future__ import annotations

import pytest

from maqet_engine.engine import is_read_only


@pytest.mark.parametrize("command", ["query-status", "x-query-ramblock", "qom-get",
                                     "qom-list", "device-list-properties"])
def test_read_only_commands(command):
    assert is_read_only(command)


@pytest.mark.parametrize("command", ["system_reset", "quit", "device_del", "qom-set",
                                     "human-monitor-command", "queryish"])
def test_commands_that_change_something(command):
    assert not is_read_only(command)
