"""Library logging: silent by default, decisions on --verbose and in the runner log."""

from __future__ import annotations

import io
import logging

from maqet_engine import log


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
