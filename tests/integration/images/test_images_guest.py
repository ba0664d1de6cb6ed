"""Disks from images, end to end through the ``maqet`` CLI: a qcow2 image served over HTTP
on 127.0.0.1, a VM of the ssh guest whose root key comes from the ``cloud_init`` seed,
real ``ssh`` with host key checking on, the image cache shared by a second VM, ``maqet
image ls/rm/prune`` and their refusals, and what a failed fetch leaves (nothing).

The ssh guest runs from its initramfs; its disk (/dev/vda) is the overlay, read through
the backing chain QEMU opened before dropping to maqet-qemu. Boot to SSH ~3 s under TCG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import guest
import image_server  # tests/support
import maqetcli  # tests/support
import pytest
import yaml

from maqet_engine import constants as C
from maqet_engine.images import ImageCache

pytestmark = pytest.mark.qemu

MiB = 1024 * 1024
BOOT_TIMEOUT = 120.0  # seconds to the ssh guest's marker; ~3 s under TCG here
CLI_TIMEOUT = 180.0  # one maqet command (a start includes the download: < 1 s here)
SSH_TIMEOUT = 60.0  # one ssh command; ~0.3 s here
IMAGE_MARK = b"MAQET-IMAGE-CONTENT"
IMAGE_SIZE = 32 * MiB  # the image's virtual size
DISK_SIZE = 48 * MiB  # the VM's disk: the overlay, grown


maqet = partial(maqetcli.maqet, timeout=CLI_TIMEOUT)
maqet_json = partial(maqetcli.maqet_json, timeout=CLI_TIMEOUT)


def one_error_line(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("maqet: error: "), run.stderr
    return lines[0]


def qcow2_image(tmp_path: Path) -> bytes:
    """A qcow2 image of IMAGE_SIZE whose first bytes are IMAGE_MARK."""
    return image_server.qcow2_image(tmp_path, IMAGE_MARK, IMAGE_SIZE)


def write_definition(tmp_path: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, **data}))
    return path


def ssh_guest_vm(image_url: str, digest: str, public_key: str) -> dict[str, Any]:
    """The ssh guest with its disk from the image and root's key from the seed only.
    Its SSH port: slirp picks a free one itself (hostfwd port 0), read back with HMP."""
    files = guest.ensure_ssh_guest()
    return {
        "accel": guest.test_accel(), "machine": "q35", "memory": "256M",
        "kernel": str(files.kernel), "initrd": str(files.initrd),
        "append": guest.SSH_GUEST_APPEND,
        "storage": [{"name": "root", "type": "qcow2", "image": image_url,
                     "checksum": f"sha256:{digest}", "size": DISK_SIZE}],
        "cloud_init": {"users": [{"name": "root", "ssh_authorized_keys": [public_key]}]},
        "arguments": ["-no-reboot", "-device", "virtio-rng-pci",
                      "-netdev", "user,id=ssh0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
                      "-device", "virtio-net-pci,netdev=ssh0"],
    }


def ssh_port(name: str) -> int:
    run = maqet("qmp", name, "human-monitor-command", "command-line=info usernet")
    assert run.returncode == 0, run.stderr
    return guest.forwarded_port(json.loads(run.stdout))


def cache_of(vms: Any) -> ImageCache:
    return ImageCache(vms.paths.data / C.IMAGES_DIR)


def cache_files(vms: Any) -> list[str]:
    objects = vms.paths.data / C.IMAGES_DIR / "sha256"
    return sorted(os.listdir(objects)) if objects.exists() else []


def test_a_vm_from_an_http_image_with_its_key_from_cloud_init(vms, server, tmp_path):
    digest = server.add("disk.qcow2", qcow2_image(tmp_path))
    url = server.url("disk.qcow2")
    key = guest.make_ssh_keypair(tmp_path)
    first = write_definition(tmp_path, "img1", ssh_guest_vm(url, digest, key.public_line))
    vms.names.append("img1")

    # Check mode predicts the start and touches nothing: no request, no cache, no home.
    check = maqet_json("apply", "-d", str(first), "--state", "running", "--check")
    assert [a["action"] for a in check["actions"]] == [
        "define", "fetch_image", "create_disk", "write_seed", "start"]
    fetch, create = check["actions"][1:3]
    assert fetch == {"action": "fetch_image", "location": url, "digest": f"sha256:{digest}"}
    assert create["backing"] == f"sha256:{digest}" and create["size"] == DISK_SIZE
    assert server.count() == 0 and not vms.home.exists()

    started = maqet_json("apply", "-d", str(first), "--state", "running")
    actions = {a["action"]: a for a in started["actions"]}
    assert list(actions) == ["define", "fetch_image", "create_disk", "write_seed", "start"]
    assert actions["fetch_image"]["digest"] == f"sha256:{digest}"
    assert actions["create_disk"]["size"] == DISK_SIZE
    assert server.count() == 1
    overlay = vms.paths.vm_data("img1").root / "root.qcow2"
    seed = vms.paths.vm_data("img1").cloud_init_seed
    assert oct(overlay.stat().st_mode & 0o777) == "0o600"
    assert oct(seed.stat().st_mode & 0o777) == "0o600"
    if os.geteuid() == 0:  # QEMU opened overlay, cached image (0400 root) and seed, then dropped
        argv = maqet_json("show", "img1")["argv"]
        assert argv[argv.index("-runas") + 1] == C.DEFAULT_QEMU_USER

    # The guest reads root's key from the seed; its host keys come from the console.
    host_keys = guest.console_host_keys(vms.paths, "img1", timeout=BOOT_TIMEOUT)
    guest.wait_console(vms.paths, "img1", guest.SSH_GUEST_MARKER, timeout=BOOT_TIMEOUT)
    assert host_keys
    port = ssh_port("img1")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(guest.known_hosts_line(k, "127.0.0.1", port) + "\n"
                                   for k in host_keys))
    ssh = subprocess.run(
        [shutil.which("ssh") or "ssh", *guest.ssh_options(key.private_key, known_hosts),
         "-p", str(port), "root@127.0.0.1",
         "cat /sys/block/vda/size; head -c 19 /dev/vda; echo; hostname"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
        check=False)
    assert ssh.returncode == 0, ssh.stderr
    sectors, mark, hostname = ssh.stdout.split("\n")[:3]
    assert int(sectors) * 512 == DISK_SIZE  # the overlay, grown to the requested size
    assert mark.encode() == IMAGE_MARK  # read through the overlay from the cached image
    assert hostname == "img1"  # cloud_init's hostname defaults to the VM's name

    # Unchanged: nothing to do, nothing fetched.
    again = maqet_json("apply", "-d", str(first), "--state", "running")
    assert again["changed"] is False and server.count() == 1

    # A second VM from the same image: no HTTP request at all.
    second = write_definition(tmp_path, "img2", ssh_guest_vm(url, digest, key.public_line))
    vms.names.append("img2")
    started = maqet_json("apply", "-d", str(second), "--state", "running")
    assert [a["action"] for a in started["actions"]] == [
        "define", "create_disk", "write_seed", "start"]
    assert server.count() == 1
    assert maqet("stop", "img2", "--force").returncode == 0

    [listed] = maqet_json("image", "ls")
    assert (listed["digest"], listed["format"], listed["virtual_size"], listed["used_by"]) == (
        digest, "qcow2", IMAGE_SIZE, ["img1", "img2"])
    assert listed["source"] == url
    table = maqet("image", "ls").stdout
    assert f"sha256:{digest[:12]}" in table and "img1, img2" in table

    refused = maqet("image", "rm", digest[:10])
    assert refused.returncode == C.EXIT_CONFLICT
    assert "is in use by VMs img1, img2" in one_error_line(refused)
    assert maqet_json("image", "prune")["actions"] == []

    # --purge deletes the overlay and the seed, never the cached image.
    purged = maqet_json("rm", "img1", "--force", "--purge")
    deleted = {a["path"] for a in purged["actions"] if a["action"] == "delete_file"}
    assert {str(overlay), str(seed)} <= deleted
    assert Path(listed["path"]).exists()
    # An overlay left by a removed VM still holds its image, until it is deleted too.
    assert maqet("rm", "img2").returncode == 0
    refused = maqet("image", "rm", f"sha256:{digest}")
    assert refused.returncode == C.EXIT_CONFLICT
    assert "img2 (removed; its disk" in one_error_line(refused)
    assert maqet("storage", "rm", "--orphaned").returncode == 0
    pruned = maqet_json("image", "prune")
    assert [a["digest"] for a in pruned["actions"]] == [f"sha256:{digest}"]
    assert maqet_json("image", "ls") == [] and cache_files(vms) == []


@pytest.mark.parametrize(("case", "exit_code", "message"), [
    ("missing", C.EXIT_NOT_FOUND, "the server answered HTTP 404 Not Found"),
    ("mismatch", C.EXIT_USAGE, "checksum mismatch: expected sha256:"),
    ("refused", C.EXIT_RUNTIME, "refused; check the URL's host and port"),
    ("html", C.EXIT_USAGE, "is an HTML page, not a disk image"),
])
def test_a_failed_fetch_is_one_line_and_leaves_nothing(vms, server, closed_port, tmp_path,
                                                       case, exit_code, message):
    page = b"<!DOCTYPE html><html><body>Download our image!</body></html>\n"
    data = qcow2_image(tmp_path)
    digest = server.add("disk.qcow2", data)
    url = {"missing": server.url("nothing.qcow2"), "mismatch": server.url("disk.qcow2"),
           "refused": f"http://127.0.0.1:{closed_port}/disk.qcow2",
           "html": server.url("page.html")}[case]
    if case == "mismatch":
        digest = "0" * 64
    if case == "html":
        digest = server.add("page.html", page)
    definition = write_definition(tmp_path, "bad", guest.guest_definition(
        "bad", storage=[{"name": "root", "type": "qcow2", "image": url,
                         "checksum": f"sha256:{digest}"}]))
    vms.names.append("bad")

    for command in (["apply", "-d", str(definition), "--state", "running"], ["start", "bad"]):
        run = maqet(*command)
        assert run.returncode == exit_code, run.stderr
        line = one_error_line(run)
        assert f"image {url}: " in line and message in line, line
        if command[0] == "apply":
            assert line.endswith("(changed before the error: defined)"), line
        # The VM stays defined and not running, without a disk; the cache holds nothing.
        [vm] = maqet_json("ls")
        assert (vm["name"], vm["status"]) == ("bad", "defined")
        assert not (vms.paths.vm_data("bad").root / "root.qcow2").exists()
        assert cache_files(vms) == [] and cache_of(vms).ls() == []

    if case == "missing":  # once the image is there, the same VM starts
        server.add("nothing.qcow2", data)
        run = maqet("start", "bad")
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"bad: fetched image {url} (sha256:")
        assert maqet("stop", "bad", "--force").returncode == 0


def test_a_full_disk_is_one_line_and_leaves_nothing(vms, server, tmpfs, tmp_path, monkeypatch):
    home = tmpfs("small", "size=4m,mode=0700") / "home"
    monkeypatch.setenv("MAQET_HOME", str(home))
    digest = server.add("big.raw", os.urandom(8 * MiB))
    definition = write_definition(tmp_path, "full", guest.guest_definition(
        "full", storage=[{"name": "root", "type": "qcow2", "image": server.url("big.raw"),
                          "checksum": f"sha256:{digest}"}]))
    run = maqet("apply", "-d", str(definition), "--state", "running")
    assert run.returncode == C.EXIT_HOST, run.stderr
    assert "not enough space in" in one_error_line(run)
    objects = home / "data" / C.IMAGES_DIR / "sha256"
    assert not objects.exists() or os.listdir(objects) == []
    assert maqet("rm", "full", "--purge").returncode == 0
