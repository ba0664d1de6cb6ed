"""The package's public API, used end to end the way the engine will use it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import maqet_engine.cloudinit as cloudinit


def test_all_lists_exactly_the_public_names():
    assert sorted(cloudinit.__all__) == sorted(
        name for name in vars(cloudinit) if not name.startswith("_")
        and name not in {"annotations", "config", "console", "files", "image",
                         "known_hosts", "seed", "sshkeys"})
    for name in cloudinit.__all__:
        assert getattr(cloudinit, name).__doc__, f"{name} has no docstring"


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
