"""maqet_vm with disks from images: a real ansible-playbook run against a real HTTP server
on 127.0.0.1 (the image tests' server) and the tiny guest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import image_server  # tests/support
import pytest
from ansible_helpers import guest_definition

pytestmark = [pytest.mark.ansible, pytest.mark.qemu]


def test_images_fail_in_one_line_and_download_once(sandbox, guest_ready, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    for variable in image_server.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
        sandbox.env.pop(variable, None)
    root = tmp_path / "www"
    root.mkdir()
    data = b"\x00" * (1024 * 1024)  # a raw disk of zeros
    (root / "disk.raw").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with image_server.serve(root) as server:
        def vm(name: str, url: str, checksum: str) -> dict:
            return guest_definition(name, cloud_init={}, storage=[
                {"name": "root", "type": "qcow2", "image": url, "checksum": checksum,
                 "size": "4M"}])

        run = sandbox.playbook("images.yml", extra_vars={
            "missing": vm("img-missing", server.url("nothing.raw"), f"sha256:{digest}"),
            "mismatch": vm("img-mismatch", server.url("disk.raw"), f"sha256:{'0' * 64}"),
            "good": vm("img-good", server.url("disk.raw"), f"sha256:{digest}"),
        })
        assert run.rc == 0, run.explain()
        # mismatch downloaded once (and kept nothing), good once; check mode never
        assert server.count("/disk.raw") == 2
    assert not sandbox.our_pids()
