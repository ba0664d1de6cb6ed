"""The layering rules of docs/DESIGN, checked on the source (ast, no imports run).

Each rule fails with the offending import and where it is. Function-level imports
count as much as module-level ones: a lazy import is still a dependency.

    front ends      maqet_engine/cli/**, ansible_collections/**      -> the facade only
    the engine      maqet_engine/**                                  -> never Ansible
    runner process  maqet_engine/runner/**                           -> never the
                    definition package, the engine, the caller side or the CLI
    the store       maqet_engine/store/**                            -> nothing above it
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "maqet_engine"
COLLECTION = REPO / "ansible_collections" / "maqet" / "vm"

# What a front end may import from the engine: the facade, the error tree, the
# constants (plain values), and the package itself (for __version__).
FRONT_END_ALLOWED = {"maqet_engine", "maqet_engine.engine", "maqet_engine.errors",
                     "maqet_engine.constants"}
# Modules below every layer: plain values, the error tree, the operation id that
# every layer passes on (a ContextVar, maqet_engine/ops.py), and fsync of a directory.
LEAVES = {"maqet_engine", "maqet_engine.constants", "maqet_engine.durable",
          "maqet_engine.errors", "maqet_engine.frozen", "maqet_engine.ops"}


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "tests" not in p.relative_to(root).parts
                  and "__pycache__" not in p.parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = _module_name(path).rsplit(".", 1)[0].split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # "from maqet_engine import engine" imports a module
                yield node.lineno, f"{base}.{alias.name}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository (not a function)."""
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(files: list[Path], allowed: set[str] | None = None,
               forbidden: tuple[str, ...] = (), *, own: tuple[str, ...] = ()) -> list[str]:
    """Imports of ``maqet_engine`` modules outside ``allowed`` (when given), and imports
    starting with any of ``forbidden``; a file may always import its ``own`` packages."""
    found = []
    for path in files:
        for line, name in imports(path):
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
            where = f"{shown}:{line} imports {name}"
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(where)
                continue
            if allowed is None or not name.startswith("maqet_engine") or not _is_module(name):
                continue
            if name in allowed or any(name == o or name.startswith(o + ".") for o in own):
                continue
            found.append(where)
    return found


def test_front_ends_use_only_the_facade():
    cli = python_files(ENGINE / "cli")
    collection = python_files(COLLECTION / "plugins")
    assert cli and collection
    assert violations(cli, FRONT_END_ALLOWED, own=("maqet_engine.cli",)) == []
    assert violations(collection, FRONT_END_ALLOWED) == []


def test_the_engine_never_imports_ansible():
    assert violations(python_files(ENGINE), forbidden=("ansible", "ansible_collections")) == []


def test_the_runner_process_stays_small():
    """The runner imports neither the definition package (its memory counts: one
    runner per VM) nor anything of the caller's side."""
    runner = python_files(ENGINE / "runner")
    assert violations(runner, forbidden=(
        "maqet_engine.definition", "maqet_engine.engine", "maqet_engine.control",
        "maqet_engine.cli", "maqet_engine.storage", "maqet_engine.snapshots", "yaml",
        "argparse")) == []


@pytest.mark.parametrize(("package", "may_import"), [
    ("store", LEAVES | {"maqet_engine.store"}),
    ("ipc", LEAVES | {"maqet_engine.ipc"}),
    # The parsers of two definition parts that their own packages own: an image's
    # location and checksum, and the cloud_init section (pure functions, no I/O).
    ("definition", LEAVES | {"maqet_engine.definition", "maqet_engine.paths",
                             "maqet_engine.images.source", "maqet_engine.cloudinit.config"}),
    ("control", LEAVES | {"maqet_engine.control", "maqet_engine.ipc", "maqet_engine.paths",
                          "maqet_engine.trust"}),
])
def test_lower_layers_import_nothing_above_them(package, may_import):
    assert violations(python_files(ENGINE / package), may_import,
                      own=tuple(may_import - LEAVES)) == []


def test_the_checker_finds_a_violation(tmp_path):
    """The rules are not vacuous: a front end importing the store lazily is reported."""
    bad = tmp_path / "probe.py"
    bad.write_text("def f():\n    from maqet_engine.store import Store\n")
    assert violations([bad], FRONT_END_ALLOWED) == ["probe.py:2 imports maqet_engine.store"]
    bad.write_text("import ansible.module_utils.basic\n")
    assert violations([bad], forbidden=("ansible",)) == [
        "probe.py:1 imports ansible.module_utils.basic"]


def test_the_runner_process_loads_no_definition_code_and_no_libcrypto():
    """What the runner imports, transitively (the rule above sees only direct imports):
    the cloudinit parts it uses (console, known_hosts) must not drag in the definition
    package (through cloudinit.config) nor hashlib (OpenSSL's libcrypto)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import maqet_engine.runner.handlers, maqet_engine.runner.reach, maqet_engine.runner.vm\n"
        "import maqet_engine.runner.__main__\n"
        "print(sorted(m for m in sys.modules if m.startswith('maqet_engine.definition')\n"
        "             or m in ('hashlib', '_hashlib', 'yaml', 'maqet_engine.cloudinit.config')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True,
                            text=True, env=env, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
