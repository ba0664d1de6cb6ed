"""docs/configuration.md is the generator's output, and covers every key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from maqet_engine.definition import default_registry
from maqet_engine.definition.docgen import render
from maqet_engine.definition.schema import FORWARD, NETWORK_TYPES, TOP

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_doc_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run "
        "'python -m maqet_engine.definition.docgen > docs/configuration.md'")


def test_module_writes_the_doc_to_stdout():
    out = subprocess.run([sys.executable, "-m", "maqet_engine.definition.docgen"], check=True,
                         capture_output=True, text=True)
    assert out.stdout == render()


def test_every_key_has_a_row():
    text = render()
    registry = default_registry()
    sections = [TOP.fields, FORWARD.fields, *(s.fields for s in NETWORK_TYPES.values()),
                *(registry.get(t).all_fields() for t in registry.types())]
    for fields in sections:
        for field in fields:
            assert f"| `{field.key}` |" in text, field.key
            assert field.doc, field.key
    for type_name in registry.types():
        assert f"#### storage, type `{type_name}`" in text


def test_doc_mentions_how_to_regenerate_and_the_merge_rules():
    text = render()
    assert "python -m maqet_engine.definition.docgen > docs/configuration.md" in text
    assert "lists included, is replaced" in text and "--set" in text
