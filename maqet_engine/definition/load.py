"""Reading definitions: YAML files, deep merge, ``--set`` overrides, ``--name``.

The YAML dialect is PyYAML's safe YAML 1.1 with three traps removed: duplicate keys
are errors, ``52:54:00:12:34:56`` stays a string (no base-60 numbers), dates stay
strings, and ``010`` is not octal. PyYAML is imported on first use only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maqet_engine.definition.merge import deep_merge, set_path
from maqet_engine.errors import ConfigError

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_INT_RE = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def load_definition(files: Sequence[Path], sets: Sequence[str] = (),
                    name: str | None = None) -> tuple[dict[str, Any], Path]:
    """Read and merge a definition; nothing is validated beyond YAML and ``--set`` syntax.

    :param files: YAML files, deep-merged in order (later wins, lists replace).
    :param sets: ``key.path=value`` overrides; values are YAML (``tags=[a,b]``).
    :param name: overrides ``name`` last (``--name``).
    :return: the raw mapping and the directory relative paths start from: the last
        file's directory, or the current directory without files.
    :raise ConfigError: unreadable file, malformed YAML, top level not a mapping,
        bad ``--set``.
    """
    raw: dict[str, Any] = {}
    for file in files:
        raw = deep_merge(raw, read_yaml_file(Path(file)))
    for text in sets:
        key_path, value = parse_set(text)
        set_path(raw, key_path, value)
    if name is not None:
        raw["name"] = name
    base_dir = Path(files[-1]).absolute().parent if files else Path.cwd()
    return raw, base_dir


def read_yaml_file(file: Path) -> dict[str, Any]:
    """One definition file as a mapping (an empty file is an empty mapping)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file", hint="check the path of the "
                          "definition file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory", hint="give a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})",
                          hint="save the file as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{file}: cannot read it: {err.strerror}") from None
    data = parse_yaml(text, source=str(file))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level is a {_yaml_type(data)}, not a mapping",
                          hint="write the definition as 'key: value' lines, starting "
                          "with 'name:'")
    return data


def parse_set(text: str) -> tuple[str, Any]:
    """``"storage.0.size=4G"`` -> ``("storage.0.size", "4G")``; the value is YAML."""
    key_path, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--set {text!r}: no '=' in it", hint="write --set key.path=value")
    key_path = key_path.strip()
    if not key_path:
        raise ConfigError(f"--set {text!r}: empty key", hint="write --set key.path=value")
    return key_path, parse_yaml(value, source=f"--set {text!r}")


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document with maqet's loader; errors name ``source``, line, column."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "malformed"
        if err.context and problem.startswith("but "):  # "expected X but found Y"
            problem = f"{err.context} {problem}"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}",
                          hint="fix the YAML syntax") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}", hint="fix the YAML syntax") from None


def _yaml_type(value: object) -> str:
    if isinstance(value, list):
        return "list"
    return "string" if isinstance(value, str) else type(value).__name__


@functools.cache
def _loader() -> type:
    """The SafeLoader subclass described in the module docstring (built once)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers
                if tag not in (_INT_TAG, _FLOAT_TAG, _TIMESTAMP_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+0123456789"))
    Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: construct_mapping reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return Loader
