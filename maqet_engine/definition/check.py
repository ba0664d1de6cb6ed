"""The generic checker: one mapping of the definition against its schema fields.

It refuses unknown keys (with "did you mean"), checks every value's type and range,
fills in defaults and normalizes values (sizes to bytes, paths to absolute, MAC
addresses to lower case). Cross-entry rules live with the entries they concern.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maqet_engine import constants as C
from maqet_engine.definition.schema import Base, Exists, Field, Kind
from maqet_engine.definition.units import SizeError, SizeTooLarge, format_size, parse_size
from maqet_engine.errors import ConfigError


@dataclass(frozen=True)
class PathContext:
    """Directories relative paths are resolved against."""

    definition_dir: Path
    vm_dir: Path
    maqet_dirs: tuple[Path, ...] = ()  # the installation's data and runtime directories

    def base(self, base: Base) -> Path:
        return self.definition_dir if base is Base.DEFINITION else self.vm_dir


@dataclass(frozen=True)
class RefusedValue:
    """A value the YAML reader could not turn into plain data (``!!int x``, ``!!binary``,
    a 5,000-digit number). It stays in place so that :func:`check_data` reports it with
    its key path: ``cpu: !!int 'x' is not an integer; ...``."""

    shown: str
    problem: str
    hint: str


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LONG_INT_BITS = 256  # larger integers are described, not printed (str() may refuse them)


def show(value: object, *, quoted: bool = True) -> str:
    """User input as it appears in a message: the one place that turns it into text.

    Control and other non-printing characters are escaped (``\\x1b``), so nothing a user
    wrote reaches a terminal raw or breaks the one-line message; text longer than
    ``MESSAGE_VALUE_MAX`` keeps its start and end around ``...``. Strings are quoted
    (``'q35'``) unless ``quoted`` is false; paths are shown bare (``/tmp/vm.yml``);
    containers and values no definition can hold are named, not printed.
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, RefusedValue):
        text = value.shown
    elif isinstance(value, Mapping):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    elif isinstance(value, int) and value.bit_length() > _LONG_INT_BITS:
        text = f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = repr(value) if quoted else _escape(value)
    elif isinstance(value, os.PathLike):
        text = _escape(os.fsdecode(value))
    elif isinstance(value, bytes):
        text = repr(value)
    else:
        text = f"a Python {type(value).__name__}"
    return shorten(text)


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _ESCAPES.get(char) or _codepoint(char)
                   for char in text)


def _codepoint(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shorten(text: str, limit: int = C.MESSAGE_VALUE_MAX) -> str:
    """``text`` if it fits ``limit``, else its start and end around ``...``."""
    if len(text) <= limit:
        return text
    head = (limit - 3) * 2 // 3
    return text[:head] + "..." + text[len(text) - (limit - 3 - head):]


def control_character(text: str) -> str | None:
    """The first control character of ``text`` named for a message (``a NUL character``,
    ``the control character U+001B``), or None when there is none."""
    for char in text:
        if unicodedata.category(char) == "Cc":
            return "a NUL character" if char == "\0" else \
                f"the control character U+{ord(char):04X}"
    return None


def join(path: str, key: object) -> str:
    """``storage[0]`` + ``size`` -> ``storage[0].size``; ints become indices. A key a
    user wrote is escaped and shortened like any value (:func:`show`)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = show(key, quoted=False)
    return f"{path}.{text}" if path else text


def check_data(value: object, path: str = "") -> None:
    """Refuse what no definition can hold, before anything walks or copies it.

    A definition is plain data: mappings with scalar keys, lists, strings, numbers,
    booleans and null, at most ``MAX_DEFINITION_DEPTH`` containers deep. YAML yields
    nothing else apart from :class:`RefusedValue`; a Python caller (the Ansible module's
    inline mapping) may pass anything: a set, bytes, a datetime, a mapping holding
    itself. A container reached twice (YAML aliases) is walked again only when reached
    deeper, so an alias bomb costs its distinct containers, not its expansion.

    :raise ConfigError: the first such value, with its key path.
    """
    deepest: dict[int, int] = {}
    # (value, its key path, containers above it, the key path of its outermost one)
    stack: list[tuple[object, str, int, str]] = [(value, path, 0, path)]
    while stack:
        node, where, depth, outer = stack.pop()
        if node is None or isinstance(node, str | int | float):  # bool is an int
            continue
        if isinstance(node, RefusedValue):
            raise ConfigError(f"{node.shown} {node.problem}", path=where, hint=node.hint)
        if not isinstance(node, Mapping | list):
            raise ConfigError(f"{show(node)} cannot be part of a definition", path=where,
                              hint="use strings, numbers, booleans, null, lists and "
                              "mappings only (what JSON can hold)")
        if depth >= C.MAX_DEFINITION_DEPTH:  # named by the key it starts at
            raise ConfigError(f"is nested more than {C.MAX_DEFINITION_DEPTH} levels deep",
                              path=outer, hint="a definition needs only a few levels; "
                              "remove the extra nesting")
        if deepest.get(id(node), -1) >= depth:
            continue
        deepest[id(node)] = depth
        if isinstance(node, list):
            children = [(item, join(where, index)) for index, item in enumerate(node)]
        else:
            children = []
            for key, item in node.items():
                if isinstance(key, RefusedValue):
                    raise ConfigError(f"{key.shown} {key.problem}", path=where,
                                      hint=key.hint)
                if key is not None and not isinstance(key, str | int | float):
                    raise ConfigError(f"has a key that is {show(key)}", path=where,
                                      hint="keys are names such as 'memory'")
                children.append((item, join(where, key if isinstance(key, str)
                                            else show(key))))
        stack.extend((item, here, depth + 1, here if depth == 0 and not path else outer)
                     for item, here in children)


def require_mapping(value: object, path: str, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{show(value)} is not a mapping", path=path,
                          hint=f"write {what} as 'key: value' lines")
    return value


def require_list(value: object, path: str, example: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{show(value)} is not a list", path=path,
                          hint=f"write a YAML list such as {example}")
    return value


def unknown_key(key: object, allowed: Sequence[str], path: str,
                elsewhere: Mapping[str, Iterable[str]] | None = None) -> ConfigError:
    """The error for ``key`` not in ``allowed``; ``elsewhere`` maps other variants
    (storage types) to their keys, to say where the key would belong."""
    key_path = join(path, key if isinstance(key, str) else show(key))
    owners = [name for name, keys in (elsewhere or {}).items() if key in keys]
    if owners:
        return ConfigError(
            f"unknown key for this type; it belongs to type {', '.join(owners)}",
            path=key_path, hint=f"allowed keys here: {', '.join(allowed)}",
        )
    close = (difflib.get_close_matches(key, allowed, n=1, cutoff=C.DID_YOU_MEAN_CUTOFF)
             if isinstance(key, str) and len(key) <= C.MESSAGE_VALUE_MAX else [])
    if close:
        return ConfigError("unknown key", path=key_path, hint=f"did you mean {close[0]!r}?")
    return ConfigError("unknown key", path=key_path, hint=f"allowed keys: {', '.join(allowed)}")


def check_keys(raw: Mapping[Any, Any], allowed: Sequence[str], path: str,
               elsewhere: Mapping[str, Iterable[str]] | None = None) -> None:
    for key in raw:
        if key not in allowed:
            raise unknown_key(key, allowed, path, elsewhere)


def check_section(raw: Mapping[Any, Any], fields: Sequence[Field], path: str,
                  ctx: PathContext | None,
                  elsewhere: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Validate and normalize one mapping; returns every field's key (defaults filled).

    ``Kind.ENTRIES`` values are only checked to be lists; their items are the
    caller's business.
    """
    check_keys(raw, [f.key for f in fields], path, elsewhere)
    present = {f.key for f in fields if raw.get(f.key) is not None}
    for f in fields:
        if f.key not in present and f.required:
            raise ConfigError("is required", path=join(path, f.key), hint=describe(f))
        for needed in f.requires if f.key in present else ():
            if needed not in present:
                raise ConfigError(f"needs {needed!r}, which is not set",
                                  path=join(path, f.key),
                                  hint=f"set {needed!r} or remove {f.key!r}")
    out: dict[str, Any] = {}
    for f in fields:
        value = raw.get(f.key)
        out[f.key] = (deepcopy(f.default) if value is None
                      else check_value(value, f, join(path, f.key), ctx))
    return out


def check_value(value: object, f: Field, path: str, ctx: PathContext | None) -> Any:
    """Check one non-null value against its field and return it normalized."""
    match f.kind:
        case Kind.STR:
            return _check_str(value, f, path)
        case Kind.INT:
            return _check_int(value, f, path)
        case Kind.BOOL:
            if not isinstance(value, bool):
                raise ConfigError(f"{show(value)} is not a boolean", path=path,
                                  hint="use true or false")
            return value
        case Kind.ENUM:
            if not isinstance(value, str) or value not in f.choices:
                raise ConfigError(f"{show(value)} is not allowed", path=path,
                                  hint=describe(f))
            return value
        case Kind.SIZE:
            return _check_size(value, f, path)
        case Kind.PATH:
            if ctx is None or f.base is None:  # pragma: no cover - schema bug
                raise AssertionError(f"no base directory for path field {f.key}")
            return check_path(value, path, base=ctx.base(f.base), exists=f.exists)
        case Kind.STR_LIST:
            items = require_list(value, path, "[a, b]")
            return [_check_str(item, f, join(path, i), allow_empty=f.pattern is None)
                    for i, item in enumerate(items)]
        case Kind.ENTRIES:
            return require_list(value, path, "[{...}, {...}] or '- key: value' items")
        case Kind.MAPPING:  # a section: its own checker normalizes what is inside
            return require_mapping(value, path, f"'{f.key}'")
        case Kind.DATA:
            if not isinstance(value, Mapping | str):
                raise ConfigError(f"{show(value)} is neither a mapping nor text", path=path,
                                  hint=describe(f))
            return value
        case Kind.BOOL_OR_STR:
            if not isinstance(value, bool | str):
                raise ConfigError(f"{show(value)} is neither a boolean nor a string",
                                  path=path, hint=describe(f))
            return value
        case Kind.MAC:
            if not isinstance(value, str) or not C.MAC_RE.fullmatch(value):
                raise ConfigError(f"{show(value)} is not a MAC address", path=path,
                                  hint=describe(f))
            return value.lower()
        case Kind.IPV4:
            try:
                return str(ipaddress.IPv4Address(value if isinstance(value, str) else ""))
            except ValueError:
                raise ConfigError(f"{show(value)} is not an IPv4 address", path=path,
                                  hint=describe(f)) from None
    raise AssertionError(f"unhandled kind {f.kind}")  # pragma: no cover


def _check_str(value: object, f: Field, path: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{show(value)} is not a string", path=path,
                          hint="quote the value to make it a string")
    _refuse_control(value, path)
    if not value and not allow_empty:
        raise ConfigError("is empty", path=path, hint="remove the key to leave it unset")
    if f.pattern is not None and not f.pattern.fullmatch(value):
        raise ConfigError(f"{show(value)} is not a valid {f.what or f.key}", path=path,
                          hint=f"use {f.pattern_help}")
    return value


def _check_int(value: object, f: Field, path: str) -> int:
    # A string of ASCII digits is a number: what Ansible passes for "{{ n }}" with
    # -e n=2, or an INI inventory variable.
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{show(value)} is not an integer", path=path, hint=describe(f))
    if (f.minimum is not None and value < f.minimum) or (
        f.maximum is not None and value > f.maximum
    ):
        raise ConfigError(f"{show(value)} is out of range", path=path, hint=describe(f))
    return value


# Decimal digits without a leading zero ("010" is not silently 10 or 8).
_DIGITS = re.compile(r"0|[1-9][0-9]{0,17}")


def _refuse_control(value: str, path: str) -> None:
    found = control_character(value)
    if found is not None:
        raise ConfigError(f"{show(value)} contains {found}", path=path, hint="remove it")


def _check_size(value: object, f: Field, path: str) -> int:
    try:
        n_bytes = parse_size(value, bare_unit=f.bare_unit, maximum=f.maximum)
    except SizeTooLarge:
        assert f.maximum is not None
        raise ConfigError(f"{show(value)} is too large", path=path,
                          hint=f"use at most {format_size(f.maximum)}") from None
    except SizeError as err:
        raise ConfigError(f"{show(value)} {err}", path=path,
                          hint="use a number with a unit such as 512M or 2G") from None
    if f.minimum is not None and n_bytes < f.minimum:
        raise ConfigError(f"{show(value)} is too small", path=path,
                          hint=f"use at least {format_size(f.minimum)}")
    if n_bytes <= 0:
        raise ConfigError(f"{show(value)} is not more than zero", path=path,
                          hint="use a number with a unit such as 512M or 2G")
    return n_bytes


def check_path(value: object, path: str, *, base: Path, exists: Exists | None) -> str:
    """Absolute, normalized (``..`` folded, ``~`` expanded, symlinks kept) path."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{show(value)} is not a path", path=path,
                          hint="use a non-empty string")
    _refuse_control(value, path)
    resolved = os.path.normpath(base / expand_user(value, path))
    if exists is None:
        return resolved
    target = Path(resolved)
    try:
        found = target.exists()
        is_dir = target.is_dir()
    except OSError as err:  # /proc/1/root/... as a user: EACCES
        raise ConfigError(f"{show(value)} cannot be accessed: {err.strerror}", path=path,
                          hint="give a path maqet can read") from None
    if not found:
        raise ConfigError(f"{show(value)} does not exist (looked for {show(Path(resolved))})",
                          path=path, hint="relative paths start at the directory of the "
                          "definition file")
    if exists is Exists.FILE and is_dir:
        raise ConfigError(f"{show(value)} is a directory, not a file", path=path,
                          hint="give the path of a file")
    if exists is Exists.DIR and not is_dir:
        raise ConfigError(f"{show(value)} is not a directory", path=path,
                          hint="give the path of a directory")
    return resolved


def expand_user(value: str, path: str) -> Path:
    """``Path(value).expanduser()``, with ``~nosuchuser`` a ConfigError."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~name of a user that does not exist, or no $HOME
        raise ConfigError(f"{show(value)}: cannot expand '~' (no such user, or no home "
                          "directory)", path=path, hint="write the path without '~'") from None


def describe(f: Field) -> str:
    """What the field allows, as a hint: ``use an integer from 1 to 1024``."""
    match f.kind:
        case Kind.INT if f.minimum is not None and f.maximum is not None:
            return f"use an integer from {f.minimum} to {f.maximum}"
        case Kind.INT:
            return "use an integer"
        case Kind.ENUM if f.choices:
            return f"use one of {', '.join(f.choices)}"
        case Kind.MAC:
            return "use six hex byte pairs such as 52:54:00:12:34:56 (quote it in YAML)"
        case Kind.IPV4:
            return "use a dotted IPv4 address such as 127.0.0.1"
        case Kind.SIZE:
            return "use a number with a unit such as 512M or 2G"
        case Kind.BOOL:
            return "use true or false"
        case Kind.PATH if f.exists is not None:
            return f"give the path of an existing {f.exists.value}"
        case Kind.PATH:
            return "give a path"
        case Kind.ENTRIES:
            return "give a list of mappings"
        case Kind.MAPPING:
            return "give a mapping ('key: value' lines)"
        case Kind.DATA:
            return "give a mapping, or text as a '|' block"
        case Kind.BOOL_OR_STR:
            return "use true, false or a string"
        case _ if f.pattern is not None:
            return f"use {f.pattern_help}"
    return f"give a {f.kind.value}"
