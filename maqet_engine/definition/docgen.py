"""Generate ``docs/configuration.md`` from the schema.

Run ``python -m maqet_engine.definition.docgen > docs/configuration.md``; a unit test
checks that the file equals this output.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

from maqet_engine.definition import doctext
from maqet_engine.definition.netspec import KINDS as NETWORK_KINDS
from maqet_engine.definition.schema import (
    CLOUD_INIT,
    CLOUD_INIT_USER,
    FORWARD,
    NETWORK_TYPES,
    SSH,
    TOP,
    Field,
    Kind,
    Section,
)
from maqet_engine.definition.storage import StorageRegistry, default_registry
from maqet_engine.definition.units import format_size

_HEADER = "| key | type | default | allowed values | meaning |\n|---|---|---|---|---|\n"
_ENTRY_LINKS = {"storage": "#storage", "network": "#network", "forward": "#forward",
                "cloud_init": "#cloud_init", "users": "#users", "ssh": "#ssh"}


def render(registry: StorageRegistry | None = None) -> str:
    """The whole of ``docs/configuration.md``."""
    registry = registry or default_registry()
    parts = [doctext.INTRO, "## Reference\n", _section("Top-level keys", TOP.fields, TOP.doc)]
    parts.append("### storage\n\n" + doctext.STORAGE)
    for type_name in registry.types():
        kind = registry.get(type_name)
        fields = _only_type(kind.all_fields(), type_name)
        parts.append(_section(f"storage, type `{type_name}`", fields, kind.doc, level=4))
    parts.append("### network\n\n" + doctext.NETWORK)
    for type_name, section in NETWORK_TYPES.items():
        fields = _only_type(section.fields, type_name)
        parts.append(_section(section.title, fields, section.doc, level=4))
    parts.append(_section("forward", FORWARD.fields, _forward_doc(FORWARD), level=4))
    parts.append(_section(CLOUD_INIT.title, CLOUD_INIT.fields, CLOUD_INIT.doc))
    parts.append(_section(CLOUD_INIT_USER.title, CLOUD_INIT_USER.fields,
                          f"Items of `users` in `cloud_init`. {CLOUD_INIT_USER.doc}", level=4))
    parts.append(_section(SSH.title, SSH.fields, SSH.doc))
    parts.append(doctext.NETWORK_DEFINITIONS)
    for type_name, section in NETWORK_KINDS.items():
        fields = _only_type(section.fields, type_name)
        parts.append(_section(section.title, fields, section.doc, level=3))
    return "\n".join(parts)


def _only_type(fields: Sequence[Field], type_name: str) -> tuple[Field, ...]:
    """A variant's table shows its own ``type`` value only."""
    return tuple(replace(f, choices=(type_name,)) if f.key == "type" else f for f in fields)


def _forward_doc(section: Section) -> str:
    return f"Items of `forward` in a `user` network entry. {section.doc}"


def _section(title: str, fields: Sequence[Field], doc: str, *, level: int = 3) -> str:
    rows = "".join(_row(f) for f in fields)
    return f"{'#' * level} {title}\n\n{doc}\n\n{_HEADER}{rows}"


def _row(f: Field) -> str:
    cells = (f"`{f.key}`", _type(f), _default(f), _allowed(f), f.doc)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"


def _type(f: Field) -> str:
    if f.kind is Kind.ENTRIES:
        return f"list of [{f.entries}]({_ENTRY_LINKS[f.entries]}) entries"
    if f.kind is Kind.MAPPING and f.entries:
        return f"[{f.entries}]({_ENTRY_LINKS[f.entries]}) mapping"
    if f.kind is Kind.ENUM:
        return "string"
    return f.kind.value


def _default(f: Field) -> str:
    if f.required:
        return "**required**"
    if f.default_doc:
        return f.default_doc
    if f.default is None:
        return "unset"
    if isinstance(f.default, bool):
        return "`true`" if f.default else "`false`"
    if f.default == []:
        return "`[]`"
    return f"`{f.default}`"


def _allowed(f: Field) -> str:
    match f.kind:
        case Kind.ENUM:
            return ", ".join(f"`{c}`" for c in f.choices)
        case Kind.INT if f.minimum is not None and f.maximum is not None:
            return f"{f.minimum} to {f.maximum}"
        case Kind.SIZE:
            bare = "MiB" if f.bare_unit == 1024 * 1024 else "bytes"
            floor = f"at least {format_size(f.minimum)}" if f.minimum else "more than 0"
            ceiling = f", at most {format_size(f.maximum)}" if f.maximum else ""
            return f"{floor}{ceiling}; a bare number is {bare}"
        case Kind.PATH:
            exists = f"; must be an existing {f.exists.value}" if f.exists else ""
            return f"relative to {f.base.value if f.base else 'the current directory'}{exists}"
        case Kind.BOOL:
            return "`true`, `false`"
        case Kind.MAC:
            return "`xx:xx:xx:xx:xx:xx` (hex), unicast"
        case Kind.IPV4:
            return f.pattern_help or "an IPv4 address; `0.0.0.0` = every interface"
        case Kind.ENTRIES:
            return "mappings, see below"
        case Kind.MAPPING if f.entries:
            return "a mapping, see below"
        case Kind.MAPPING:
            return "any mapping"
        case Kind.DATA:
            return "a mapping, or text"
        case Kind.BOOL_OR_STR:
            return "`true`, `false`, a string"
        case Kind.STR_LIST if not f.pattern_help:
            return "any strings"
    if f.pattern_help:
        return f"each: {f.pattern_help}" if f.kind is Kind.STR_LIST else f.pattern_help
    return "any non-empty string"


def main() -> int:
    """Write the document to stdout."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
