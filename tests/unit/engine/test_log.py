"""Library logging: silent by default, decisions on --verbose and in the runner log."""

from __future__ import annotations

import io
import json
import logging

import pytest

from maqet_engine import log, ops
from maqet_engine.errors import UsageError


def test_the_package_logger_is_silent_by_default(capsys):
    log.get_logger("maqet_engine.engine.lifecycle").warning("not for the terminal")
    assert capsys.readouterr() == ("", "")


def test_a_decision_goes_to_verbose_output_and_the_runner_log(tmp_path):
    stream = io.StringIO()
    handler = log.enable_verbose(stream)
    try:
        runner_log = tmp_path / "runner.log"
        log.decision(log.get_logger("maqet_engine.engine.lifecycle"), runner_log, "vm1",
                     wanted="running", found="stopped", action="start")
    finally:
        logging.getLogger(log.PACKAGE).removeHandler(handler)
    assert stream.getvalue() == "maqet: vm1: wanted running, found stopped, start\n"
    assert runner_log.read_text().endswith(
        "INFO maqet_engine.engine.lifecycle: vm1: wanted running, found stopped, start\n")


def test_an_unwritable_runner_log_never_fails_the_decision(tmp_path):
    log.decision(log.get_logger("x"), tmp_path / "missing-dir" / "runner.log", "vm1",
                 wanted="stopped", found="running", action="stop")


def decide(runner_log, op=None):
    token = ops.current.set(op)
    try:
        log.decision(log.get_logger("maqet_engine.engine.lifecycle"), runner_log, "vm1",
                     wanted="stopped", found="running", action="stop")
    finally:
        ops.current.reset(token)


def test_a_decision_line_carries_the_operation_id(tmp_path):
    runner_log = tmp_path / "runner.log"
    decide(runner_log, op="a1b2c3d4e5f6")
    decide(runner_log)
    first, second = runner_log.read_text().splitlines()
    assert first.endswith("vm1: wanted stopped, found running, stop op=a1b2c3d4e5f6")
    assert second.endswith("vm1: wanted stopped, found running, stop")


def test_a_decision_line_follows_the_format_of_the_runner_log(tmp_path, monkeypatch):
    """A JSON runner log stays JSON whatever the deciding process's environment says;
    a new log takes MAQET_LOG_FORMAT."""
    runner_log = tmp_path / "runner.log"
    runner_log.write_text(json.dumps({"message": "from the runner"}) + "\n")
    decide(runner_log, op="op-1")
    line = json.loads(runner_log.read_text().splitlines()[-1])
    assert {k: line[k] for k in ("level", "vm", "event", "op", "wanted", "found", "action")} \
        == {"level": "INFO", "vm": "vm1", "event": "decision", "op": "op-1",
            "wanted": "stopped", "found": "running", "action": "stop"}
    assert line["message"] == "vm1: wanted stopped, found running, stop"
    assert line["time"][:4].isdigit() and line["process"].startswith("engine[")
    fresh = tmp_path / "new.log"
    monkeypatch.setenv("MAQET_LOG_FORMAT", "json")
    decide(fresh)
    assert json.loads(fresh.read_text())["op"] is None


def test_log_format_comes_from_the_environment():
    assert log.log_format({}) == "text"
    assert log.log_format({"MAQET_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(UsageError, match="MAQET_LOG_FORMAT='xml' is not a log format"):
        log.log_format({"MAQET_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_runner_lines_carry_vm_event_and_the_operation_being_served(fmt):
    stream = io.StringIO()
    handler = log.runner_handler(logging.StreamHandler(stream), vm="web1", fmt=fmt)
    logger = logging.getLogger("maqet_engine.runner.web1.test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.info("outside")
        token = ops.current.set("req-7")
        try:
            logger.info("status %s", "running -> stopping", extra={"event": "stop_requested"})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            ops.current.reset(token)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    if fmt == "text":
        lines = text.splitlines()
        assert lines[0].endswith("INFO maqet_engine.runner.web1.test: outside")
        assert lines[1].endswith(": status running -> stopping op=req-7")
        assert lines[2].endswith(": failed op=req-7") and "ValueError: boom" in text
        return
    records = [json.loads(line) for line in text.splitlines()]  # one object per line
    assert len(records) == 3
    assert {k: records[0][k] for k in ("level", "vm", "event", "message", "op")} == {
        "level": "INFO", "vm": "web1", "event": None, "message": "outside", "op": None}
    assert (records[1]["event"], records[1]["op"], records[1]["message"]) == (
        "stop_requested", "req-7", "status running -> stopping")
    assert records[2]["level"] == "ERROR" and "ValueError: boom" in records[2]["exception"]
