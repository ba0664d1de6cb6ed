"""Argument parsing of the runtime commands (no QEMU)."""

from __future__ import annotations

import argparse

import pytest

from maqet_engine import constants as C
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


# --- exec and cp (guest_cmds) ---------------------------------------------------------------
def exec_words(*argv: str) -> tuple[str, list[str], argparse.Namespace]:
    from maqet_engine.cli.guest_cmds import split_exec_words
    from maqet_engine.cli.main import build_parser

    args = build_parser().parse_args(["exec", *argv])
    name, command = split_exec_words(args)
    return name, command, args


def test_exec_options_before_or_after_the_name_and_the_command_after_dashes():
    name, command, args = exec_words("--env", "B=2", "vm1", "--env", "A=1", "--cwd", "/tmp",
                                     "--timeout", "3", "-n", "--", "sh", "-c", "x --y")
    assert (name, command) == ("vm1", ["sh", "-c", "x --y"])
    assert (args.env, args.cwd, args.timeout, args.no_stdin) == (["B=2", "A=1"], "/tmp", 3.0,
                                                                 True)
    # Without options after the name, the command may follow it: its -- is its own.
    assert exec_words("vm1", "grep", "--", "-x")[:2] == ("vm1", ["grep", "--", "-x"])
    assert exec_words("vm1", "--", "--env")[:2] == ("vm1", ["--env"])
    assert exec_words("vm1", "ls")[2].agent_timeout == C.AGENT_TIMEOUT_S


@pytest.mark.parametrize("argv", [[], ["vm1"], ["vm1", "--"], ["vm1", "--env", "A=1", "ls"],
                                  ["--", "ls"], ["vm1", "--bogus", "--", "ls"]])
def test_exec_without_a_name_or_command_is_a_usage_error(argv):
    with pytest.raises(UsageError):
        exec_words(*argv)


def test_maqet_options_stop_at_dashes():
    """A guest command's own --json or --debug is not maqet's."""
    from maqet_engine.cli.main import _maqet_words, _wants_json

    argv = ["exec", "vm1", "--", "tool", "--json"]
    assert not _wants_json(argv) and _maqet_words(argv) == ["exec", "vm1"]
    assert _wants_json(["--json", "exec", "vm1", "--", "tool"])


def test_cp_locations():
    from maqet_engine.cli.guest_cmds import split_location

    assert split_location("vm1:/etc/os-release") == ("vm1", "/etc/os-release")
    assert split_location("vm-1.a:/tmp/") == ("vm-1.a", "/tmp/")
    for local in ("file.txt", "./vm1:/x", "/abs/path", "vm1:relative", "C:\\x", ":/x"):
        assert split_location(local) == (None, local)
