"""The ssh guest under raw QEMU (no maqet code): SSH with host key checking on, python3,
sftp, qemu-ga, keys from the kernel command line or a NoCloud seed, Ansible.

What these tests pin down is what maqet's Ansible side relies on: a guest that prints its host
keys on the console the way cloud-init does, accepts only the key given from outside, runs
Python for Ansible modules, transfers files over sftp, and answers qemu-ga (also without NIC).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import guest
import pytest

pytestmark = pytest.mark.qemu

BOOT_TIMEOUT = 120.0  # seconds to the marker; ~3 s under TCG here, generous for loaded CI
SSH_TIMEOUT = 60.0  # one ssh/scp/sftp command; ~0.3 s here
EXIT_TIMEOUT = 30.0  # system_powerdown -> QEMU gone; ~0.05 s here
QGA_TIMEOUT = 60.0
ANSIBLE_TIMEOUT = 300.0  # one playbook with setup + command; ~10-20 s here


@dataclass
class SSHGuest:
    qemu: guest.RawGuest
    host_keys: list[str]
    port: int | None  # host port forwarded to the guest's 22 (None without NIC)
    known_hosts: Path
    key: guest.SSHKeyPair

    @property
    def console(self) -> guest.SerialConsole:
        return self.qemu.console

    def ssh_options(self, key: guest.SSHKeyPair | None = None,
                    known_hosts: Path | None = None) -> list[str]:
        """Options shared by ssh, scp and sftp: no user or system config, this key only, and
        host key checking against the keys the guest printed on its console."""
        return guest.ssh_options((key or self.key).private_key, known_hosts or self.known_hosts)

    def ssh(self, command: str, *, key: guest.SSHKeyPair | None = None,
            known_hosts: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.port is not None, "this guest has no NIC"
        argv = [guest.program("ssh"), *self.ssh_options(key, known_hosts), "-p", str(self.port),
                "root@127.0.0.1", command]
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=SSH_TIMEOUT, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {command!r} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def agent(self) -> guest.GuestAgent:
        assert "qga0" in self.qemu.sockets, "this guest has no qemu-ga channel"
        agent = guest.GuestAgent(self.qemu.sockets["qga0"])
        agent.sync(QGA_TIMEOUT)
        return agent


@pytest.fixture(scope="module")
def ssh_guest_files() -> guest.GuestFiles:
    return guest.ensure_ssh_guest()


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> guest.SSHKeyPair:
    return guest.make_ssh_keypair(tmp_path_factory.mktemp("client-key"))


@pytest.fixture
def boot(ssh_guest_files: guest.GuestFiles, client_key: guest.SSHKeyPair,
         tmp_path: Path) -> Iterator[Callable[..., SSHGuest]]:
    """Boot the ssh guest; QEMU is killed by PID and sockets removed at teardown."""
    with guest.RawQemu(tmp_path, prefix="maqet-ssh-") as qemus:

        def _boot(*, cmdline_key: bool = True, seed: Path | None = None, nic: bool = True,
                  qga: bool = True, rng: bool = True) -> SSHGuest:
            append = guest.ssh_guest_append(client_key.public_line) if cmdline_key \
                else guest.SSH_GUEST_APPEND
            args: list[str] = []
            if rng:
                # Seeds the guest kernel's random pool at once: dropbearkey's getrandom() would
                # otherwise wait ~1 s under TCG.
                args += ["-device", "virtio-rng-pci"]
            if nic:
                args += guest.ssh_forward_args()
            if qga:
                args += guest.qga_args("qga0")
            if seed is not None:
                args += guest.virtio_disk_args(seed, "seed", fmt="raw", read_only=True)
            vm = qemus.start(ssh_guest_files.kernel, ssh_guest_files.initrd, append,
                             chardevs=("qga0",) if qga else (), args=args)
            vm.wait_for(guest.SSH_GUEST_MARKER, BOOT_TIMEOUT)
            host_keys = guest.host_keys_from_console(vm.console.text)
            port = vm.forwarded_port() if nic else None
            known_hosts = tmp_path / f"known_hosts{len(qemus.guests)}"
            if port is not None:
                guest.write_known_hosts(known_hosts, host_keys, port)
            return SSHGuest(vm, host_keys, port, known_hosts, client_key)

        yield _boot


def test_key_on_kernel_cmdline_python_sftp_qga_and_powerdown(boot, tmp_path):
    vm = boot(cmdline_key=True)

    # One fresh ed25519 host key, printed like cloud-init prints it.
    assert len(vm.host_keys) == 1, vm.console.text
    assert re.fullmatch(r"ssh-ed25519 AAAA\S+", vm.host_keys[0])
    assert "root@maqet-ssh-guest" in vm.console.text  # printed as cloud-init does

    # Host key checking is on: the known_hosts built from the console is what lets us in.
    facts = json.loads(vm.ssh(
        "python3 -c 'import json, platform, sys; print(json.dumps({"
        '"python": platform.python_version(), "system": platform.system(), '
        '"node": platform.node(), "machine": platform.machine(), '
        '"os_id": platform.freedesktop_os_release()["ID"], "prefix": sys.prefix}))\''
    ).stdout)
    assert facts["python"].startswith("3.11.")
    assert facts == dict(facts, system="Linux", node="maqet-ssh-guest", machine="x86_64",
                         os_id="debian", prefix="/usr")

    # sftp both ways (scp in OpenSSH 9 speaks sftp too): dropbear hands it to sftp-server.
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(256 * 1024))
    back = tmp_path / "back.bin"
    batch = tmp_path / "sftp.batch"
    batch.write_text(f"put {payload} /tmp/payload.bin\nget /tmp/payload.bin {back}\n")
    result = subprocess.run(
        [guest.program("sftp"), *vm.ssh_options(), "-P", str(vm.port), "-b", str(batch),
         "root@127.0.0.1"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert back.read_bytes() == payload.read_bytes()
    result = subprocess.run(
        [guest.program("scp"), *vm.ssh_options(), "-P", str(vm.port), str(payload),
         "root@127.0.0.1:/root/copied.bin"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SSH_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    digest = vm.ssh("sha256sum /root/copied.bin").stdout.split()[0]
    assert digest == hashlib.sha256(payload.read_bytes()).hexdigest()

    with vm.agent() as agent:
        assert agent.execute("guest-ping") == {}
        assert agent.execute("guest-get-host-name") == {"host-name": "maqet-ssh-guest"}

    assert vm.qemu.powerdown(EXIT_TIMEOUT) == 0, vm.qemu.log.read_text(errors="replace")


def test_only_the_given_key_and_the_printed_host_key_are_accepted(boot, tmp_path):
    vm = boot(cmdline_key=True, qga=False)
    assert vm.ssh("echo in-$((6*7))").stdout == "in-42\n"

    other = guest.make_ssh_keypair(tmp_path, "other", comment="not-authorized")
    refused = vm.ssh("true", key=other, check=False)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr

    # A different host key under the guest's name must stop the client: checking is real.
    impostor = guest.make_ssh_keypair(tmp_path, "impostor")
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(guest.known_hosts_line(impostor.public_line, "127.0.0.1", vm.port) + "\n")
    mismatch = vm.ssh("true", known_hosts=wrong, check=False)
    assert mismatch.returncode == 255
    assert "Host key verification failed" in mismatch.stderr


def test_no_key_given_means_no_login(boot):
    """Keys come only from outside: none is baked into the image. (Also boots without
    virtio-rng: slower host key generation, same result.)"""
    vm = boot(cmdline_key=False, qga=False, rng=False)
    assert "no SSH key given" in vm.console.text
    refused = vm.ssh("true", check=False)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


USERS_USER_DATA = """\
#cloud-config
hostname: seeded-by-user-data
users:
  - name: root
    ssh_authorized_keys:
      - {key}
"""

TOP_LEVEL_USER_DATA = """\
#cloud-config
ssh_authorized_keys:
  - "{key}"
"""


@pytest.mark.parametrize(
    ("filesystem", "user_data", "hostname"),
    [
        ("iso9660", USERS_USER_DATA, "seeded-by-user-data"),  # user-data's hostname wins
        ("vfat", TOP_LEVEL_USER_DATA, "seeded-by-meta-data"),
    ],
    ids=["iso9660-users", "vfat-top-level"],
)
def test_key_and_hostname_from_nocloud_seed(boot, client_key, tmp_path, filesystem,
                                            user_data, hostname):
    seed = guest.make_nocloud_seed(
        tmp_path / "seed.img",
        user_data=user_data.format(key=client_key.public_line),
        meta_data="instance-id: iid-maqet-test\nlocal-hostname: seeded-by-meta-data\n",
        filesystem=filesystem,
    )
    vm = boot(cmdline_key=False, seed=seed, qga=False)
    assert len(vm.host_keys) == 1 and f" root@{hostname}\n" in vm.console.text
    assert vm.ssh("hostname").stdout == f"{hostname}\n"
    assert vm.ssh("cat /root/.ssh/authorized_keys").stdout.split()[:2] == \
        client_key.public_line.split()[:2]


def test_without_nic_qemu_ga_runs_commands(boot):
    vm = boot(cmdline_key=False, nic=False, qga=True)
    assert vm.port is None
    with vm.agent() as agent:
        code, out, err = agent.exec_wait(
            ["/bin/sh", "-c", "ls /sys/class/net; python3 -c 'print(6 * 7)'"], timeout=QGA_TIMEOUT
        )
    assert (code, out, err) == (0, b"lo\n42\n", b"")


def _ansible_playbook() -> str:
    """ansible-playbook of the venv running the tests (setup.sh installs the ansible extra)."""
    candidate = Path(sys.executable).with_name("ansible-playbook")
    if candidate.exists():
        return str(candidate)
    return guest.program("ansible-playbook")


@pytest.mark.ansible
def test_ansible_setup_and_command_over_ssh(boot, tmp_path):
    vm = boot(cmdline_key=True, qga=False)
    ssh_args = " ".join([
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={vm.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
    ])  # fmt: skip
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"ssh-guest": {
        "ansible_host": "127.0.0.1",
        "ansible_port": vm.port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(vm.key.private_key),
        "ansible_ssh_common_args": ssh_args,
        "ansible_python_interpreter": "/usr/bin/python3",
    }}}}))
    # The results are written on the controller by the playbook itself: ansible-core has no
    # machine-readable stdout callback of its own (json is in ansible.posix).
    result_file = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""\
- hosts: ssh-guest
  gather_facts: false
  tasks:
    - ansible.builtin.setup:
    - ansible.builtin.command: cat /etc/hostname
      register: hostname_cmd
    - ansible.builtin.copy:
        dest: {result_file}
        content: "{{{{ result | to_json }}}}"
      vars:
        result:
          distribution: "{{{{ ansible_facts.distribution }}}}"
          python_version: "{{{{ ansible_facts.python_version }}}}"
          hostname: "{{{{ ansible_facts.hostname }}}}"
          ipv4: "{{{{ ansible_facts.default_ipv4.address }}}}"
          command_stdout: "{{{{ hostname_cmd.stdout }}}}"
      delegate_to: localhost
""")
    env = dict(
        os.environ,
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TMP="/tmp/ansible-remote",
        ANSIBLE_CONFIG=str(tmp_path / "no-ansible.cfg"),  # not one found in the cwd
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="True",
        # No ControlPersist master left behind after the playbook.
        ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPersist=no",
        LC_ALL="C.UTF-8",
    )
    output = tmp_path / "ansible.log"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [_ansible_playbook(), "-i", str(inventory), str(playbook)],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=ANSIBLE_TIMEOUT)
        finally:
            # ansible-playbook and the ssh clients it started share its process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.read_text()
    assert returncode == 0, text
    result = json.loads(result_file.read_text())
    assert result.pop("python_version").startswith("3.11."), text
    assert result == {
        "distribution": "Debian",
        "hostname": "maqet-ssh-guest",
        "ipv4": guest.SSH_GUEST_ADDRESS,
        "command_stdout": "maqet-ssh-guest",
    }, text
