"""Key names and text as qcode chords (US keyboard layout), and chords as the key
events of QMP ``input-send-event``.

``chord("ctrl-alt-delete")`` -> ``["ctrl", "alt", "delete"]`` (pressed together);
``text_chords("Hi!\\n")`` -> ``[["shift", "h"], ["i"], ["shift", "1"], ["ret"]]``;
``key_events(["shift", "h"], down=True)`` presses shift then h, ``down=False``
releases h then shift.
"""

from __future__ import annotations

import string
from typing import Any

from maqet_engine.errors import UsageError

# Friendly names -> QEMU qcodes (see QAPI QKeyCode). Anything already a qcode passes.
_ALIASES: dict[str, str] = {
    "control": "ctrl", "lctrl": "ctrl", "rctrl": "ctrl_r", "ctrl_l": "ctrl",
    "lalt": "alt", "ralt": "alt_r", "altgr": "alt_r", "alt_l": "alt",
    "lshift": "shift", "rshift": "shift_r", "shift_l": "shift",
    "del": "delete", "enter": "ret", "return": "ret", "escape": "esc", "space": "spc",
    "bs": "backspace", "pgup": "pgup", "pageup": "pgup", "pgdn": "pgdn", "pagedown": "pgdn",
    "ins": "insert", "win": "meta_l", "super": "meta_l", "meta": "meta_l",
    "minus": "minus", "plus": "equal", "print": "print", "sysrq": "sysrq",
}

_QCODES: frozenset[str] = frozenset(
    list(string.ascii_lowercase) + list(string.digits)
    + [f"f{n}" for n in range(1, 25)]
    + [
        "shift", "shift_r", "alt", "alt_r", "ctrl", "ctrl_r", "menu", "esc", "minus",
        "equal", "backspace", "tab", "bracket_left", "bracket_right", "ret", "semicolon",
        "apostrophe", "grave_accent", "backslash", "comma", "dot", "slash", "asterisk",
        "spc", "caps_lock", "num_lock", "scroll_lock", "print", "sysrq", "pause", "home",
        "pgup", "pgdn", "end", "left", "up", "down", "right", "insert", "delete",
        "meta_l", "meta_r", "power", "sleep", "wake", "kp_0", "kp_1", "kp_2", "kp_3",
        "kp_4", "kp_5", "kp_6", "kp_7", "kp_8", "kp_9", "kp_add", "kp_subtract",
        "kp_multiply", "kp_divide", "kp_enter", "kp_decimal", "less"
    ]
)

# Characters typed without shift that are not letters or digits.
_PLAIN: dict[str, str] = {
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", "[": "bracket_left",
    "]": "bracket_right", "\\": "backslash", ";": "semicolon", "'": "apostrophe",
    "`": "grave_accent", ",": "comma", ".": "dot", "/": "slash",
}
# Characters typed with shift: the unshifted key they share.
_SHIFTED: dict[str, str] = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
    ")": "0", "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right",
    "|": "backslash", ":": "semicolon", '"': "apostrophe", "~": "grave_accent", "<": "comma",
    ">": "dot", "?": "slash",
}


def qcode(name: str) -> str:
    """One key name as a qcode, or UsageError."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _QCODES:
        raise UsageError(f"unknown key {name!r}",
                         hint="use QEMU qcodes such as ctrl, alt, delete, ret, f1, a, 1")
    return key


def chord(spec: str) -> list[str]:
    """``"ctrl-alt-delete"`` -> qcodes pressed together. ``-`` alone is the minus key."""
    if spec in ("-", "minus"):
        return ["minus"]
    parts = spec.split("-")
    if "" in parts:
        raise UsageError(f"bad key chord {spec!r}", hint="write chords like ctrl-alt-delete")
    return [qcode(part) for part in parts]


def char_chord(char: str) -> list[str]:
    if char in string.ascii_lowercase or char in string.digits:
        return [char]
    if char in string.ascii_uppercase:
        return ["shift", char.lower()]
    if char in _PLAIN:
        return [_PLAIN[char]]
    if char in _SHIFTED:
        return ["shift", _SHIFTED[char]]
    if char == "\r":
        return ["ret"]
    raise UsageError(f"cannot type {char!r} with a US keyboard",
                     hint="type ASCII text only; send other keys as key chords")


def text_chords(text: str) -> list[list[str]]:
    """Every character of ``text`` as the chord that types it (newline -> ret)."""
    return [char_chord(char) for char in text]


def key_events(qcodes: list[str], *, down: bool) -> list[dict[str, Any]]:
    """The ``events`` of one ``input-send-event``: press the chord's keys in order, or
    release them in reverse order."""
    ordered = qcodes if down else list(reversed(qcodes))
    return [{"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": code}}}
            for code in ordered]
