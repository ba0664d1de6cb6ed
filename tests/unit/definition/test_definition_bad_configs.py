"""Every definition in bad_configs.yaml is refused with its message and key path,
and refusing it writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from maqet_engine.definition import load_definition, parse_spec
from maqet_engine.errors import ConfigError
from maqet_engine.paths import Paths

CORPUS_FILE = Path(__file__).with_name("bad_configs.yaml")
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text(encoding="utf-8"))


def test_corpus_is_well_formed():
    assert len(CORPUS) >= 60
    ids = [case["id"] for case in CORPUS]
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
    assert "\n" not in str(info.value)
    assert not paths.data.exists() and not paths.runtime.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["def", "vm.yml"]
