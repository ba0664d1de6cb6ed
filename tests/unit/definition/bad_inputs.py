"""Definition *files* maqet must refuse: bytes, devices, huge or deep input, hostile
file names. The second half of the bad-definition corpus (``bad_configs.yaml`` holds
the YAML texts): these cases need bytes, special files or generated text, so they are
Python. Both the parser test and the CLI tests run every case.

A case names the file to give ``-d``: ``content`` written to ``name`` under the test's
directory, or ``name`` alone (nothing written: a missing file), or ``make`` (builds
the file and returns its path), or ``device`` (an existing system path such as
``/dev/zero``). ``error`` is a substring of the one-line message, ``path`` the key path
of the ConfigError ("" for whole-file errors).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ESC = "\x1b"
MIB = 1024 * 1024


@dataclass(frozen=True)
class BadInput:
    id: str
    error: str
    path: str = ""
    content: str | bytes | None = None
    name: str = "vm.yml"
    make: Callable[[Path], Path] | None = None
    device: str | None = None

    def file(self, directory: Path) -> Path:
        """Create what the case needs in ``directory``; the path to give ``-d``."""
        if self.device is not None:
            return Path(self.device)
        if self.make is not None:
            return self.make(directory)
        target = directory / self.name
        if isinstance(self.content, bytes):
            target.write_bytes(self.content)
        elif isinstance(self.content, str):
            target.write_text(self.content, encoding="utf-8")
        return target


def _fifo(directory: Path) -> Path:
    path = directory / "vm.yml"
    os.mkfifo(path)  # no writer: a blocking open() would hang here
    return path


def _long_path(directory: Path) -> Path:
    return directory / ("x" * 5000) / "vm.yml"


def _deep_block_mapping(levels: int) -> str:
    lines = ["name: a"] + [" " * (2 * level) + "k:" for level in range(levels)]
    return "\n".join(lines) + " 1\n"


# Ten levels of ten aliases: 10**10 strings if anything expanded it.
_ALIAS_BOMB = "name: a\narguments:\n  - &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)

CASES: tuple[BadInput, ...] = (
    # --- bytes that are not plain UTF-8 text ---------------------------------------
    BadInput("nul-byte", "vm.yml: contains a NUL character at line 1, column 8; remove it",
             content=b"name: a\x00\n"),
    BadInput("bel-byte", "vm.yml: contains the control character U+0007 at line 2, column 13",
             content=b"name: a\nmachine: q35\x07\n"),
    BadInput("escape-byte", "contains the control character U+001B at line 1, column 7",
             content=b"name: \x1b[2Ja\n"),
    BadInput("utf-16-with-bom", "vm.yml: is UTF-16 (or UTF-32) text, not UTF-8; save it as UTF-8",
             content="name: a\n".encode("utf-16")),
    BadInput("utf-16-without-bom", "is UTF-16 (or UTF-32) text, not UTF-8",
             content="name: a\nmemory: 1G\n".encode("utf-16-le")),
    BadInput("utf-32", "is UTF-16 (or UTF-32) text", content="name: a\n".encode("utf-32")),
    # --- not a regular file, or far too big ------------------------------------------
    BadInput("dev-zero", "/dev/zero: is a character device, not a regular file; give a "
             "YAML file", device="/dev/zero"),
    BadInput("dev-urandom", "/dev/urandom: is a character device, not a regular file",
             device="/dev/urandom"),
    BadInput("fifo", "vm.yml: is a pipe, not a regular file", make=_fifo),
    BadInput("two-mebibytes", "vm.yml: is larger than 1024 KiB, too large for a definition",
             content="name: a\n" + "#" * (2 * MIB) + "\n"),
    # --- nesting: refused before anything recurses into it ---------------------------
    BadInput("1000-nested-lists", "x: is nested more than 32 levels deep (", path="x",
             content="name: a\nx: " + "[" * 1000 + "]" * 1000 + "\n"),
    BadInput("1000-nested-mappings", "storage: is nested more than 32 levels deep",
             path="storage", content="name: a\nstorage: " + "{a: " * 1000 + "1"
             + "}" * 1000 + "\n"),
    BadInput("200-nested-block-mappings", "k: is nested more than 32 levels deep",
             path="k", content=_deep_block_mapping(200)),
    BadInput("100000-nested-lists-at-the-top", "is nested more than 32 levels deep",
             content="[" * 100_000 + "]" * 100_000 + "\n"),
    BadInput("alias-bomb", "arguments[0]: a list is not a string", path="arguments[0]",
             content=_ALIAS_BOMB),
    BadInput("self-referencing-alias", "invalid YAML at line 2, column 4",
             content="name: a\nx: &a [*a]\n"),
    # --- numbers too long for int() ---------------------------------------------------
    BadInput("5000-digit-cpu", "cpu: a number of 5000 characters is too long", path="cpu",
             content="name: a\ncpu: " + "9" * 5000 + "\n"),
    BadInput("5000-digit-memory-key", "a number of 5000 characters is too long",
             content="name: a\n? " + "7" * 5000 + "\n: 1\n"),  # an explicit key: any length
    # --- hostile file names: escaped and shortened in the message ---------------------
    BadInput("missing-file-with-escapes-in-its-name",
             "\\x1b[2J\\x1b]0;owned\\x07.yml: no such file", name=f"{ESC}[2J{ESC}]0;owned\a.yml"),
    BadInput("yaml-error-in-file-with-escapes-in-its-name",
             "\\x1b[31mred.yml: invalid YAML at line 2, column 1", name=f"{ESC}[31mred.yml",
             content="name: [a\n"),
    BadInput("5000-character-path", "xxx/vm.yml: cannot read it: File name too long",
             make=_long_path),
    BadInput("5000-character-key", "unknown key", path="k" * 104 + "..." + "k" * 53,
             content="name: a\n? " + "k" * 5000 + "\n: 1\n"),
)
