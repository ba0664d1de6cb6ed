"""Argument parsing of the runtime commands (no QEMU)."""

from __future__ import annotations

import argparse

import pytest

from maqet_engine.cli.definition_cmds import STATES, seconds
from maqet_engine.cli.runtime_cmds import parse_qmp_arguments
from maqet_engine.engine import STATES as ENGINE_STATES
from maqet_engine.errors import UsageError


def test_qmp_arguments():
    assert parse_qmp_arguments(None, []) == {}
    assert parse_qmp_arguments('{"a": 1}', ["b=2", "c=text", "d=true", "e={\"x\":1}"]) == {
        "a": 1, "b": 2, "c": "text", "d": True, "e": {"x": 1}}
    for bad_json, pairs in (("[1]", []), ("{", []), (None, ["novalue"]), (None, ["=1"])):
        with pytest.raises(UsageError):
            parse_qmp_arguments(bad_json, pairs)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "-1", "-0.5", "x", "", "1e999"])
def test_seconds_refuses_what_is_not_a_duration(text):
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)


def test_seconds_accepts_durations():
    assert [seconds(t) for t in ("0", "1", "2.5", "30")] == [0.0, 1.0, 2.5, 30.0]


def test_cli_states_are_the_engine_states():
    assert STATES == ENGINE_STATES
