"""The package's public API, used end to end the way the engine will use it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import maqet_engine.cloudinit as cloudinit

REPO = Path(__file__).resolve().parents[3]


def test_all_lists_exactly_the_public_names():
    """Each public name resolves (lazily) to a documented object of one of the parts, and
    the package lists exactly those names."""
    for name in cloudinit.__all__:
        value = getattr(cloudinit, name)
        assert value.__doc__, f"{name} has no docstring"
        part = value.__module__.rsplit(".", 1)[-1]
        assert name in __import__(f"maqet_engine.cloudinit.{part}", fromlist=["_"]).__all__
    assert set(cloudinit.__all__) <= set(dir(cloudinit))
    assert {"normalize", "build_seed", "write_seed", "host_keys_from_console",
            "known_hosts_lines", "read_known_hosts", "write_known_hosts"} <= set(
                cloudinit.__all__)
    with pytest.raises(AttributeError):
        cloudinit.no_such_name  # noqa: B018


def test_console_and_known_hosts_load_no_definition_code_and_no_libcrypto(ed25519: str):
    """What the per-VM runner imports (its memory counts): parsing the console and writing
    known_hosts pull in neither the definition package nor hashlib (OpenSSL)."""
    script = (
        "import sys\n"
        "import maqet_engine.cloudinit\n"
        "from maqet_engine.cloudinit.console import host_keys_from_console\n"
        "from maqet_engine.cloudinit.known_hosts import known_hosts_lines, write_known_hosts\n"
        "keys = host_keys_from_console(sys.stdin.read())\n"
        "write_known_hosts(sys.argv[1], known_hosts_lines(['[127.0.0.1]:2222'], keys))\n"
        "write_known_hosts(sys.argv[1], known_hosts_lines(['[127.0.0.1]:2222'], keys))\n"
        "print(sorted(m for m in sys.modules if m.startswith('maqet_engine.definition')\n"
        "             or m in ('hashlib', '_hashlib', 'maqet_engine.cloudinit.config')))\n"
    )
    console = "\n".join(["-----BEGIN SSH HOST KEY KEYS-----", ed25519,
                          "-----END SSH HOST KEY KEYS-----", ""])
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-c", script, f"{tmp}/known_hosts"],
                                input=console, capture_output=True, text=True, env=env,
                                timeout=60, check=True)
        assert Path(f"{tmp}/known_hosts").read_text().split()[1] == "ssh-ed25519"
    assert result.stdout.strip() == "[]"


def test_definition_to_seed_to_known_hosts(tmp_path: Path, data_dir: Path, ed25519: str):
    raw = {"hostname": "web1", "users": [{"name": "root", "ssh_authorized_keys": [ed25519]}]}
    normalized = cloudinit.normalize(raw)
    seed = cloudinit.build_seed(normalized, vm_name="web1")
    image = cloudinit.write_seed(seed, tmp_path / "cidata.iso")
    assert image.changed
    assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert not cloudinit.write_seed(cloudinit.build_seed(raw, vm_name="web1"), image.path).changed

    console = (data_dir / "console-two-boots.log").read_bytes().decode()
    keys = cloudinit.host_keys_from_console(console)
    lines = cloudinit.known_hosts_lines([cloudinit.host_pattern("127.0.0.1", 2222)], keys)
    assert cloudinit.write_known_hosts(tmp_path / "known_hosts", lines)
    written = (tmp_path / "known_hosts").read_text().splitlines()
    assert [line.split()[1] for line in written] == [
        "ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert all(line.startswith("[127.0.0.1]:2222 ") for line in written)
    prints = cloudinit.fingerprints_from_console(console)
    assert [p.fingerprint for p in prints] == [cloudinit.fingerprint(k) for k in keys]


def test_pycdlib_is_imported_only_to_write_or_read_an_image(tmp_path: Path):
    """Loading a definition with cloud_init must not pay for the ISO library."""
    script = (
        "import sys\n"
        "import maqet_engine.cloudinit as c\n"
        "seed = c.build_seed(c.normalize({'hostname': 'web1'}), vm_name='web1')\n"
        "print('pycdlib' in sys.modules)\n"
        "c.write_seed(seed, sys.argv[1])\n"
        "print('pycdlib' in sys.modules)\n"
    )
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cidata.iso")],
                            capture_output=True, text=True, env=env, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]
