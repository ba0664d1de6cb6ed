"""Reading definitions: YAML files, deep merge, ``--set`` overrides, ``--name``.

The YAML dialect is PyYAML's safe YAML 1.1 with three traps removed: duplicate keys
are errors, ``52:54:00:12:34:56`` stays a string (no base-60 numbers), dates stay
strings, and ``010`` is not octal. PyYAML is imported on first use only.

What is read is bounded before it is parsed: a definition file is a regular file of
at most ``MAX_DEFINITION_BYTES`` of UTF-8 text (``/dev/zero``, a FIFO or UTF-16 is
refused unread), nesting deeper than ``MAX_DEFINITION_DEPTH`` stops the composer, and
values YAML cannot give as plain data (``!!int x``, ``!!binary``, ``!!set``) become a
:class:`~maqet_engine.definition.check.RefusedValue` that the checker reports with
its key path. Every message shows user input through ``check.show``.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.check import (
    RefusedValue,
    check_data,
    control_character,
    join,
    show,
)
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
        check_data(value, key_path)
        set_path(raw, key_path, value)
    if name is not None:
        raw["name"] = name
    base_dir = Path(files[-1]).absolute().parent if files else Path.cwd()
    return raw, base_dir


def read_yaml_file(file: Path) -> dict[str, Any]:
    """One definition file as a mapping (an empty file is an empty mapping)."""
    text = _read_text(file)
    data = parse_yaml(text, source=show(file))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{show(file)}: the top level is a {_yaml_type(data)}, not a "
                          "mapping", hint="write the definition as 'key: value' lines, "
                          "starting with 'name:'")
    return data


def _read_text(file: Path) -> str:
    """The file's text: a regular file of at most ``MAX_DEFINITION_BYTES``, UTF-8.

    Opened without blocking (a FIFO without a writer would hang ``open``) and checked
    on the open descriptor before a byte is read, so ``/dev/zero`` costs nothing.
    """
    shown = show(file)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file", hint="check the path of the "
                          "definition file") from None
    except OSError as err:
        raise ConfigError(f"{shown}: cannot read it: {err.strerror}",
                          hint="check the path of the definition file and its "
                          "permissions") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{shown}: is a directory", hint="give a YAML file")
        raise ConfigError(f"{shown}: is {_file_kind(mode)}, not a regular file",
                          hint="give a YAML file; definitions are read from regular "
                          "files only")
    with os.fdopen(fd, "rb") as stream:
        try:
            data = stream.read(C.MAX_DEFINITION_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"{shown}: cannot read it: {err.strerror}") from None
    if len(data) > C.MAX_DEFINITION_BYTES:
        raise ConfigError(f"{shown}: is larger than {C.MAX_DEFINITION_BYTES // 1024} KiB, "
                          "too large for a definition",
                          hint="give the VM's YAML definition file")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
            data.count(0) * 4 >= len(data) > 0):
        raise ConfigError(f"{shown}: is UTF-16 (or UTF-32) text, not UTF-8",
                          hint="save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: not UTF-8 text ({err.reason} at byte {err.start})",
                          hint="save the file as UTF-8") from None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"  # pragma: no cover - every kind Linux has is named above


def parse_set(text: str) -> tuple[str, Any]:
    """``"storage.0.size=4G"`` -> ``("storage.0.size", "4G")``; the value is YAML."""
    key_path, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--set {show(text)}: no '=' in it",
                          hint="write --set key.path=value")
    key_path = key_path.strip()
    if not key_path:
        raise ConfigError(f"--set {show(text)}: empty key", hint="write --set key.path=value")
    return key_path, parse_yaml(value, source=f"--set {show(text)}", at=key_path)


def parse_yaml(text: str, *, source: str, at: str = "") -> Any:
    """Parse one YAML document with maqet's loader; errors name ``source``, line, column.

    ``source`` is already fit for a message (see ``show``); ``at`` is the key path the
    document is the value of (``--set``), "" for a whole definition.
    """
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except TooDeep as err:
        key = getattr(err.key_node, "value", None)
        where = f"line {err.mark.line + 1}, column {err.mark.column + 1}"
        raise ConfigError(f"is nested more than {C.MAX_DEFINITION_DEPTH} levels deep "
                          f"({source}, {where})", path=at or (join("", key) if isinstance(
                              key, str) else ""),
                          hint="a definition needs only a few levels; remove the extra "
                          "nesting") from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow
        raise ConfigError(f"{source}: contains {_character(err.character)}"
                          f"{_where(text, err.position)}",
                          hint="remove it; a definition is plain UTF-8 text") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "malformed"
        if err.context and problem.startswith("but "):  # "expected X but found Y"
            problem = f"{err.context} {problem}"
        raise ConfigError(f"{source}: invalid YAML{where}: {show(problem, quoted=False)}",
                          hint="fix the YAML syntax") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {show(str(err), quoted=False)}",
                          hint="fix the YAML syntax") from None


class TooDeep(Exception):
    """The YAML text nests collections deeper than ``MAX_DEFINITION_DEPTH``."""

    def __init__(self, mark: Any, key_node: Any) -> None:
        super().__init__("too deep")
        self.mark = mark
        self.key_node = key_node  # the top-level key it is under (a YAML node), if any


def _character(char: object) -> str:
    code = char if isinstance(char, int) else ord(str(char))
    return control_character(chr(code)) or f"the character U+{code:04X}"


def _where(text: str, position: int) -> str:
    if not 0 <= position <= len(text):  # pragma: no cover - PyYAML gives an index
        return ""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f" at line {line}, column {column}"


def _yaml_type(value: object) -> str:
    if isinstance(value, list):
        return "list"
    return "string" if isinstance(value, str) else type(value).__name__


@functools.cache
def _loader() -> type:
    """The SafeLoader subclass described in the module docstring (built once)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # The composer and the constructor recurse once per level, and the scanner
            # slows down with every open flow level: stop at the checker's depth limit
            # (1,000 nested '[' were a RecursionError), naming the top-level key.
            trail = self.__dict__.setdefault("_maqet_trail", [])
            if len(trail) >= C.MAX_DEFINITION_DEPTH and self.check_event(
                    yaml.CollectionStartEvent):
                raise TooDeep(self.peek_event().start_mark, trail[1] if len(trail) > 1
                              else None)
            trail.append(index)
            try:
                return super().compose_node(parent, index)
            finally:
                trail.pop()

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
                    f"duplicate key {show(key)}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    for kind, problem, hint in _CHECKED_SCALARS:
        Loader.add_constructor(f"tag:yaml.org,2002:{kind}",
                               _checked_scalar(kind, problem, hint))
    for kind, problem, hint in _REFUSED_TAGS:
        Loader.add_constructor(f"tag:yaml.org,2002:{kind}", _refused_tag(kind, problem, hint))
    return Loader


# Scalars whose text PyYAML converts with int()/float()/a table, which raise plain
# ValueError/KeyError on text such as "!!int x": kept as a RefusedValue instead, which
# the checker reports with its key path.
_CHECKED_SCALARS = (
    ("int", "is not an integer", "write a whole number such as 2, without the !!int tag"),
    ("float", "is not a number", "write a number such as 1.5, without the !!float tag"),
    ("bool", "is not a boolean", "write true or false"),
)
# Tags of values that no definition can hold (they are not JSON).
_REFUSED_TAGS = (
    ("binary", "is binary data, which a definition cannot hold",
     "remove the !!binary tag and write text"),
    ("set", "is a set, which a definition cannot hold", "write a list such as [a, b]"),
    ("omap", "is an ordered map, which a definition cannot hold",
     "write a mapping ('key: value' lines)"),
    ("pairs", "is a list of pairs, which a definition cannot hold",
     "write a mapping ('key: value' lines)"),
    ("timestamp", "is a date, which a definition cannot hold",
     "remove the !!timestamp tag; dates are strings in a definition"),
)


def _checked_scalar(kind: str, problem: str, hint: str) -> Any:
    import yaml

    convert = getattr(yaml.SafeLoader, f"construct_yaml_{kind}")

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return convert(loader, node)
        except (ValueError, KeyError, ArithmeticError):
            text = loader.construct_scalar(node)
            if kind == "int" and _INT_RE.fullmatch(text):  # longer than int() takes
                return RefusedValue(f"a number of {len(text)} characters", "is too long",
                                    "write a number of a few digits")
            return RefusedValue(f"!!{kind} {show(text)}", problem, hint)

    return construct


def _refused_tag(kind: str, problem: str, hint: str) -> Any:
    import yaml

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        return RefusedValue(f"!!{kind} value", problem, hint)

    return construct
