"""Every bad definition of the spec corpus, through the real CLI: exit 2, the
message on one line, and nothing written under MAQET_HOME (no store, no VM dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine import constants as C
from maqet_engine.cli.main import main

CORPUS = yaml.safe_load(
    (Path(__file__).parents[1] / "definition" / "bad_configs.yaml").read_text()
)


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
    assert err.startswith("maqet: error: ") and err.count("\n") == 1
    assert case["error"] in err
    assert main([command, "-c", str(cfg), "--json"]) == C.EXIT_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "ConfigError" and error["path"] == case["path"]
    assert not maqet_home.exists()


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 50
