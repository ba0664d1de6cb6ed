"""Every bad definition of the corpus, through the CLI: exit 2, the message on one
printable line, and nothing written under MAQET_HOME (no store, no VM dir).

The YAML corpus (bad_configs.yaml) runs in-process; the file corpus (bad_inputs.py:
bytes, /dev/zero, 1,000-deep nesting, hostile file names) runs the real CLI in a
subprocess with an address-space limit, as a user's shell would, since what matters
there is the process: its memory, its stack, the bytes it writes to a terminal."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine import constants as C
from maqet_engine.cli.main import main

DEFINITION_TESTS = Path(__file__).parents[1] / "definition"
CORPUS = yaml.safe_load((DEFINITION_TESTS / "bad_configs.yaml").read_text())
MESSAGE_MAX = 600  # bytes of one error line: a shortened value or two and a hint
CLI_MEMORY_LIMIT = 1024 * 1024 * 1024  # bytes of address space for the maqet process
CLI_TIMEOUT_S = 60.0  # a refusal takes ~0.2 s; a FIFO read that blocks would hang


def _load_bad_inputs() -> Any:
    name = "maqet_bad_inputs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEFINITION_TESTS / "bad_inputs.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


INPUTS = _load_bad_inputs().CASES


def assert_one_clean_line(err: str) -> None:
    assert err.startswith("maqet: error: ") and err.endswith("\n") and err.count("\n") == 1
    assert not [c for c in err[:-1] if unicodedata.category(c) == "Cc"], err
    assert len(err.encode()) <= MESSAGE_MAX, err[:200]


def _write(case: dict[str, Any], tmp_path: Path) -> Path:
    config = case["config"]
    path = tmp_path / "vm.yml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
@pytest.mark.parametrize("command", ["add", "apply"])
def test_bad_config_exits_2_and_writes_nothing(case, command, tmp_path, maqet_home, capsys):
    cfg = _write(case, tmp_path)
    assert main([command, "-c", str(cfg)]) == C.EXIT_USAGE
    err = capsys.readouterr().err
    assert_one_clean_line(err)
    assert case["error"] in err
    assert main([command, "-c", str(cfg), "--json"]) == C.EXIT_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "ConfigError" and error["path"] == case["path"]
    assert not maqet_home.exists()


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY_LIMIT, CLI_MEMORY_LIMIT))


@pytest.mark.parametrize("case", INPUTS, ids=[c.id for c in INPUTS])
def test_bad_input_through_the_real_cli(case, tmp_path, maqet_home, capsys):
    directory = tmp_path / "def"
    directory.mkdir()
    definition = case.file(directory)
    proc = subprocess.run([sys.executable, "-m", "maqet_engine", "add", "-d", definition],
                          capture_output=True, timeout=CLI_TIMEOUT_S, check=False,
                          preexec_fn=_limit_memory, env=os.environ.copy())
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == C.EXIT_USAGE, err
    assert_one_clean_line(err)
    assert case.error in err
    assert proc.stdout == b""
    assert main(["apply", "-d", str(definition), "--json"]) == C.EXIT_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "ConfigError" and error["path"] == case.path
    assert not maqet_home.exists()


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 50 and len(INPUTS) >= 20
