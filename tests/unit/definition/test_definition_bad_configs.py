"""Every definition of the bad-definition corpus is refused with its message and key
path, in one printable line of bounded length, and refusing it writes nothing.

The corpus: bad_configs.yaml (YAML texts and mappings) and bad_inputs.py (bytes,
devices, generated deep or long input, hostile file names)."""

from __future__ import annotations

import importlib.util
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine.definition import load_definition, parse_spec
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths

CORPUS_FILE = Path(__file__).with_name("bad_configs.yaml")
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text(encoding="utf-8"))


def load_bad_inputs() -> Any:
    """bad_inputs.py, by path (tests are not a package; the CLI test loads it too)."""
    name = "maqet_bad_inputs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
            "bad_inputs.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


INPUTS = load_bad_inputs().CASES
# A message quotes at most a shortened value or two plus its hint: never a whole input.
MESSAGE_MAX = 600


def assert_one_clean_line(message: str) -> None:
    """One line, no control character (no raw terminal escape), bounded length."""
    assert not [c for c in message if unicodedata.category(c) == "Cc"], message
    assert len(message) <= MESSAGE_MAX, message[:200]


def test_corpus_is_well_formed():
    assert len(CORPUS) >= 60
    ids = [case["id"] for case in CORPUS] + [case.id for case in INPUTS]
    assert len(ids) == len(set(ids))
    for case in CORPUS:
        assert set(case) == {"id", "config", "error", "path"}, case["id"]
        assert isinstance(case["config"], dict | str), case["id"]


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_bad_config_is_refused(case: dict[str, Any], tmp_path: Path, paths: Paths):
    definition = tmp_path / "def" / "vm.yml"
    definition.parent.mkdir()
    config = case["config"]
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    definition.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        raw, base_dir = load_definition([definition])
        parse_spec(raw, base_dir=base_dir, paths=paths)

    assert case["error"] in str(info.value)
    assert info.value.path == case["path"]
    assert_one_clean_line(str(info.value))
    assert not paths.data.exists() and not paths.runtime.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["def", "vm.yml"]


@pytest.mark.parametrize("case", INPUTS, ids=[c.id for c in INPUTS])
def test_bad_input_is_refused(case: Any, tmp_path: Path, paths: Paths):
    directory = tmp_path / "def"
    directory.mkdir()
    definition = case.file(directory)
    made = sorted(directory.rglob("*"))

    with pytest.raises(ConfigError) as info:
        raw, base_dir = load_definition([definition])
        parse_spec(raw, base_dir=base_dir, paths=paths)

    assert case.error in str(info.value)
    assert info.value.path == case.path
    assert_one_clean_line(str(info.value))
    assert not paths.data.exists() and not paths.runtime.exists()
    assert sorted(directory.rglob("*")) == made
