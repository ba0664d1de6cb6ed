"""`maqet image pull` draws a real progress bar on a terminal, and a `prune` run while a
start is downloading its image neither disturbs the download nor takes the image away
(real HTTP server on 127.0.0.1, real processes, a pseudo-terminal)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from functools import partial
from pathlib import Path

import guest
import maqetcli  # tests/support
import pytest
import yaml

from maqet_engine import constants as C

pytestmark = pytest.mark.qemu

MiB = 1024 * 1024
CLI_TIMEOUT = 120.0  # one maqet command; ~0.3 s here
GATE_TIMEOUT = 30.0  # until the gated download is half-way; milliseconds here


maqet = partial(maqetcli.maqet, timeout=CLI_TIMEOUT)


def test_pull_draws_a_bar_on_a_terminal_and_erases_it(maqet_home, server):
    digest = server.add("disk.raw", os.urandom(4 * MiB))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "maqet_engine", "image", "pull",
                                 server.url("disk.raw"), "--checksum", f"sha256:{digest}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                                env=os.environ.copy(), text=True)
    finally:
        os.close(slave)
    out, _ = proc.communicate(timeout=CLI_TIMEOUT)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert proc.returncode == 0, drawn
    assert out.startswith(f"{server.url('disk.raw')}: fetched (sha256:{digest[:12]}, raw,")
    text = drawn.decode()
    assert "\r[####################] 100% 4.0 MiB/4.0 MiB" in text, text
    assert text.endswith("\r\x1b[K")  # the bar's line is erased at the end
    again = maqet("image", "pull", server.url("disk.raw"), "--checksum", f"sha256:{digest}")
    assert "already cached" in again.stdout and server.count() == 1


def test_prune_during_a_download_of_a_start(vms, server, tmp_path: Path):
    digest = server.add("disk.raw", os.urandom(2 * MiB))
    definition = tmp_path / "vm.yml"
    definition.write_text(yaml.safe_dump(guest.guest_definition("gated", storage=[
        {"name": "root", "type": "qcow2", "image": server.url("disk.raw", "gate"),
         "checksum": f"sha256:{digest}"}])))
    vms.names.append("gated")
    start = subprocess.Popen([sys.executable, "-m", "maqet_engine", "--json", "apply", "-d",
                              str(definition), "--state", "running"], env=os.environ.copy(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert server.started.wait(GATE_TIMEOUT), "the start never asked for its image"
        # Half the image is in the start's temporary file, under the image's lock.
        pruned = maqet("--json", "image", "prune")
        assert pruned.returncode == 0 and json.loads(pruned.stdout)["actions"] == []
        server.release.set()
        out, err = start.communicate(timeout=CLI_TIMEOUT)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
    assert start.returncode == 0, err
    verbs = [a["action"] for a in json.loads(out)["actions"]]
    assert verbs == ["define", "fetch_image", "create_disk", "start"]
    # The image the VM's definition names and its overlay uses is kept by a later prune.
    pruned = maqet("--json", "image", "prune")
    assert json.loads(pruned.stdout)["actions"] == []
    [image] = json.loads(maqet("--json", "image", "ls").stdout)
    assert image["digest"] == digest and image["used_by"] == ["gated"]
    assert maqet("stop", "gated", "--force").returncode == 0
    assert C.IMAGES_DIR in image["path"]
