"""Helpers shared by the benchmarks (not a benchmark itself)."""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_package() -> None:
    """Write the package's bytecode first, as an installed package has it: with
    PYTHONDONTWRITEBYTECODE set (it is on our CI machines) an editable checkout
    would otherwise compile every module from source at every CLI start."""
    import maqet_engine

    compileall.compile_dir(str(Path(maqet_engine.__file__).parent), quiet=1)


def description(doc: str | None) -> str:
    """A benchmark's ``--help`` line: the first paragraph of its docstring, unwrapped
    (its first line alone stops mid-sentence)."""
    return " ".join((doc or "").split("\n\n", 1)[0].split())
