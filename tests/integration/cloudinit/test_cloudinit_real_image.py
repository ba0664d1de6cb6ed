"""``cloud_init`` with the real thing: the Debian 12 cloud image (systemd, cloud-init 22.4)
as a disk's local ``image``, booted by maqet with the seed maqet writes. Over SSH (host key
checking on, keys from cloud-init's console block) cloud-init finished without errors,
made the user with its key and sudo rule, and set the hostname; a changed ``cloud_init``
is ``restart_required``, and ``apply --recreate`` boots with a new instance-id, so
cloud-init runs again and applies the change.

One test: real cloud-init under TCG takes ~35-50 s per boot here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

import guest
import maqetcli
import pytest
import yaml

from maqet_engine import engine
from maqet_engine.cloudinit import build_seed

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 300.0  # start -> host keys on the console; ~35-50 s under TCG here
FINISH_TIMEOUT = 180.0  # host keys -> "Cloud-init ... finished"; ~1 s here
CLI_TIMEOUT = 300.0  # one maqet command: the first copies the 384 MB image (~2-5 s here)
SSH_TIMEOUT = 180.0  # one ssh command; python3 under TCG ~1 s, `cloud-init status` ~10 s
FINISHED = r"Cloud-init v\. \S+ finished at"

maqet_json = partial(maqetcli.maqet_json, timeout=CLI_TIMEOUT)

# Run as root through sudo (-n: never a password prompt): what cloud-init left behind.
REPORT = """\
import json, pwd, socket
result = json.load(open("/run/cloud-init/result.json"))["v1"]
data = json.load(open("/run/cloud-init/instance-data.json"))["v1"]
print(json.dumps({"errors": result["errors"], "datasource": result["datasource"],
                  "instance_id": data["instance_id"], "hostname": socket.gethostname(),
                  "home": pwd.getpwnam("tester").pw_dir}))
"""


def definition(tmp_path: Path, image: guest.CloudImage, public_key: str, hostname: str,
               ) -> Path:
    data = {
        "name": "cloud1", "accel": guest.test_accel(), "machine": "q35", "memory": "512M",
        "kernel": str(image.kernel), "initrd": str(image.initrd), "append": guest.CLOUD_APPEND,
        "storage": [{"name": "root", "type": "qcow2", "image": str(image.image)}],
        "cloud_init": {"hostname": hostname, "users": [
            {"name": "tester", "ssh_authorized_keys": [public_key], "sudo": True}]},
        "arguments": ["-no-reboot", "-device", "virtio-rng-pci",
                      "-netdev", "user,id=ssh0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
                      "-device", "virtio-net-pci,netdev=ssh0"],
    }
    path = tmp_path / f"cloud1-{hostname}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


class Booted:
    """The VM's current boot, reached over SSH as ``tester``."""

    def __init__(self, ctx: engine.EngineContext, tmp_path: Path, key: guest.SSHKeyPair,
                 ) -> None:
        host_keys = guest.console_host_keys(ctx.paths, "cloud1", timeout=BOOT_TIMEOUT)
        assert host_keys
        guest.wait_console(ctx.paths, "cloud1", FINISHED, timeout=FINISH_TIMEOUT)
        log = b"".join(engine.read_log(ctx, "cloud1", "serial", lines=None, follow=False))
        self.console = log.decode(errors="replace")  # for messages
        usernet = engine.qmp(ctx, "cloud1", "human-monitor-command",
                             {"command-line": "info usernet"}).data
        self.port = guest.forwarded_port(usernet)
        self.known_hosts = guest.write_known_hosts(tmp_path / f"known_hosts-{self.port}",
                                                   host_keys, self.port)
        self.key = key

    def ssh(self, command: str, stdin: str | None = None) -> str:
        run = subprocess.run(
            [shutil.which("ssh") or "ssh", *guest.ssh_options(self.key.private_key,
                                                              self.known_hosts),
             "-p", str(self.port), "tester@127.0.0.1", command],
            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=SSH_TIMEOUT, check=False)
        assert run.returncode == 0, f"{command}: {run.stderr}\n{self.console[-3000:]}"
        return run.stdout

    def report(self) -> dict[str, Any]:
        return json.loads(self.ssh("sudo -n python3 -", stdin=REPORT))


def instance_id(ctx: engine.EngineContext) -> str:
    spec = engine.show(ctx, "cloud1").data["spec"]
    return build_seed(spec["cloud_init"], vm_name="cloud1").instance_id


def test_real_cloud_init_from_the_seed_and_again_after_a_change(vms, tmp_path):
    image = guest.ensure_cloud_image()
    key = guest.make_ssh_keypair(tmp_path)
    ctx = engine.EngineContext(paths=vms.paths)
    vms.names.append("cloud1")

    start = time.monotonic()
    first = maqet_json("apply", "-d", str(definition(tmp_path, image, key.public_line,
                                                     "maqet-cloud-a")), "--state", "running")
    started = time.monotonic() - start
    assert [a["action"] for a in first["actions"]] == [
        "define", "fetch_image", "create_disk", "write_seed", "start"]
    boot = Booted(ctx, tmp_path, key)
    booted = time.monotonic() - start
    assert "status: done" in boot.ssh("cloud-init status")
    report = boot.report()
    old_id = instance_id(ctx)
    # The seed is the virtio disk after the root disk (/dev/vda).
    assert report.pop("datasource").startswith("DataSourceNoCloud [seed=/dev/vdb]")
    assert report == {"errors": [], "instance_id": old_id, "hostname": "maqet-cloud-a",
                      "home": "/home/tester"}
    print(f"\nfirst start (copy of the image + overlay + seed) {started:.1f} s, "
          f"to 'Cloud-init finished' {booted:.1f} s")

    # A changed cloud_init on a running VM: stored, and a restart is required.
    changed = definition(tmp_path, image, key.public_line, "maqet-cloud-b")
    pending = maqet_json("apply", "-d", str(changed), "--state", "running")
    assert pending["restart_required"] is True
    assert [a["action"] for a in pending["actions"]] == ["redefine"]  # the seed waits
    assert instance_id(ctx) != old_id

    start = time.monotonic()
    recreated = maqet_json("apply", "-d", str(changed), "--state", "running", "--recreate")
    verbs = [a["action"] for a in recreated["actions"]]
    assert verbs[0] == "write_seed" and "fetch_image" not in verbs and "create_disk" not in verbs
    assert recreated["restart_required"] is False
    boot = Booted(ctx, tmp_path, key)
    rebooted = time.monotonic() - start
    report = boot.report()
    assert report["instance_id"] == instance_id(ctx) != old_id  # cloud-init ran again
    assert report["hostname"] == "maqet-cloud-b" and report["errors"] == []
    print(f"recreate to 'Cloud-init finished' {rebooted:.1f} s")
