"""Guests from an image to "SSH-able" (issue 10): prints wall times and ratios against raw
QEMU measured in the same run; asserts nothing.

The guest is the tests' small SSH guest (dropbear, root's key from a cloud-init seed),
its disk an overlay on a qcow2 image served over HTTP on 127.0.0.1, SSH on an auto port.
"SSH-able" means: the guest's ``SSH-`` banner was read through the forward (and, for
maqet, its host keys are in the VM's known_hosts).

1. One VM: ``ansible-playbook`` start (one maqet_vm task with ``wait: {ssh: true}``) to
   its end, and ``maqet start`` + ``maqet wait --ssh`` (no Ansible), against raw
   ``qemu-system-x86_64`` with the same kernel, overlay, seed and forward, from spawn to
   the banner, read once the console showed the host keys (a script that probes blindly
   mostly waits out read timeouts: slirp accepts before the guest listens)
   (target: playbook <= 1.2x).
2. Four VMs: one task starts all four, a second waits for each (the waits overlap the
   boots), against four raw QEMUs started at once, to the last banner.
3. The image cache: ``maqet start`` of a VM whose image must be downloaded (miss: a
   64 MiB qcow2 of random data) and of a second VM from the same image (hit).

    .venv/bin/python bench/bench_guests.py [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "guest"))
sys.path.insert(0, str(REPO))

import guest  # noqa: E402  (tests/guest/guest.py)

from maqet_engine.cloudinit import build_seed, write_seed  # noqa: E402

BANNER_TIMEOUT = 300.0
MiB = 1024 * 1024

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/maqet.vm.maqet: {{maqet_home: "{{{{ maqet_home }}}}"}}
  tasks:
{tasks}
"""
START = """\
    - maqet.vm.maqet_vm:
        state: running
        definition: "{{{{ vms[item] }}}}"
{wait}      loop: "{{{{ vms | list }}}}"
"""


def load_image_server() -> Any:
    spec = importlib.util.spec_from_file_location(
        "maqet_image_server", REPO / "tests" / "integration" / "images" / "image_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def qcow2_image(directory: Path, name: str, *, random_mib: int = 0) -> bytes:
    """A 32 MiB qcow2 image (``random_mib`` MiB of it random data, so it is that big)."""
    raw, qcow2 = directory / f"{name}.raw", directory / f"{name}.qcow2"
    with raw.open("wb") as out:
        out.write(b"MAQET-BENCH")
        if random_mib:
            out.write(os.urandom(random_mib * MiB))
        out.truncate(max(32, random_mib + 1) * MiB)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                    str(qcow2)], check=True, timeout=120)
    raw.unlink()
    return qcow2.read_bytes()


def definition(name: str, files: Any, image: str, checksum: str, key: Any,
               size: str | None = "48M") -> dict[str, Any]:
    return {
        "name": name, "accel": guest.test_accel(), "machine": "q35", "memory": "256M",
        "kernel": str(files.kernel), "initrd": str(files.initrd),
        "append": guest.SSH_GUEST_APPEND, "arguments": ["-no-reboot", "-device", "virtio-rng-pci"],
        "storage": [{"name": "root", "type": "qcow2", "image": image, "checksum": checksum,
                     "size": size}],
        "cloud_init": {"users": [{"name": "root", "ssh_authorized_keys": [key.public_line]}]},
        "ssh": {"private_key": str(key.private_key)},
        "network": [{"type": "user", "forward": [{"host": "auto", "guest": 22}]}],
    }


# --- raw QEMU: the same guest, spawn to banner ---------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_banner(port: int, deadline: float) -> None:
    """The probe maqet makes (connect, read "SSH-" with a 2 s read timeout), retried every
    0.1 s without back-off: the best a raw script can do, the baseline to beat."""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), \
                socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            with contextlib.suppress(TimeoutError):
                if sock.recv(256).startswith(b"SSH-"):
                    return
        time.sleep(0.1)
    raise SystemExit(f"raw QEMU: no SSH banner on port {port}")


@contextlib.contextmanager
def raw_guests(root: Path, files: Any, image: Path, seed: Path, count: int,
               ) -> Iterator[list[int]]:
    """``count`` raw QEMUs of the guest (overlay on ``image``, ``seed``, a forward each);
    yields their ports once spawned; killed on exit."""
    procs, ports = [], []
    try:
        for index in range(count):
            overlay = root / f"raw{index}.qcow2"
            overlay.unlink(missing_ok=True)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image),
                            "-F", "qcow2", str(overlay), "48M"], check=True, timeout=60)
            port = free_port()
            ports.append(port)
            (root / f"raw{index}.log").unlink(missing_ok=True)
            procs.append(subprocess.Popen([
                "qemu-system-x86_64", "-machine", f"q35,accel={guest.test_accel()}",
                "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
                "-kernel", str(files.kernel), "-initrd", str(files.initrd),
                "-append", guest.SSH_GUEST_APPEND, "-device", "virtio-rng-pci",
                "-blockdev", f"driver=qcow2,node-name=root,file.driver=file,"
                             f"file.filename={overlay}",
                "-device", "virtio-blk-pci,drive=root",
                "-blockdev", f"driver=raw,node-name=seed,read-only=on,file.driver=file,"
                             f"file.filename={seed}",
                "-device", "virtio-blk-pci,drive=seed",
                "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
                "-device", "virtio-net-pci,netdev=n0",
                "-serial", f"file:{root / f'raw{index}.log'}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield ports
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def wait_for_keys(log: Path, deadline: float) -> None:
    """Until the guest printed its host keys on the console (QEMU's serial file): probing
    earlier mostly waits out read timeouts, since slirp accepts a forwarded connection
    before anything in the guest listens."""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if b"-----END SSH HOST KEY KEYS-----" in log.read_bytes():
                return
        time.sleep(0.02)
    raise SystemExit(f"raw QEMU: no host keys in {log}")


def raw_to_banner(root: Path, files: Any, image: Path, seed: Path, count: int) -> float:
    """Spawn to the last banner, done as well as a script can: watch each console for the
    keys, then read the banner."""
    start = time.perf_counter()
    with raw_guests(root, files, image, seed, count) as ports:
        deadline = time.monotonic() + BANNER_TIMEOUT
        for index, port in enumerate(ports):
            wait_for_keys(root / f"raw{index}.log", deadline)
            read_banner(port, deadline)
        return time.perf_counter() - start


# --- maqet ---------------------------------------------------------------------------------
def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(LC_ALL="C.UTF-8", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(REPO), ANSIBLE_COLLECTIONS_PATH=str(REPO),
               ANSIBLE_HOME=str(root / "ansible"), ANSIBLE_LOCAL_TEMP=str(root / "tmp"),
               ANSIBLE_REMOTE_TMP=str(root / "rtmp"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               MAQET_HOME=str(root / "home"), ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(name, None)
    return env


def run(argv: list[str], env: dict[str, str], out: Path) -> float:
    """Wall time of one command (output to a file, never a pipe)."""
    start = time.perf_counter()
    with out.open("w") as fh:
        proc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              timeout=BANNER_TIMEOUT * 2)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.read_text()[-3000:]}")
    return elapsed


def maqet(env: dict[str, str], out: Path, *args: str) -> float:
    return run([sys.executable, "-m", "maqet_engine", *args], env, out)


def remove_all(env: dict[str, str], out: Path, names: list[str]) -> None:
    for name in names:
        maqet(env, out, "rm", name, "--force", "--purge", "--missing-ok")


def playbook(root: Path, env: dict[str, str], vms: dict[str, Any], *, split: bool) -> float:
    """Playbook start to its end: one task that starts and waits, or (``split``) one that
    starts every VM and one that waits for each."""
    if split:
        tasks = START.format(wait="") + START.format(wait="        wait: {ssh: true}\n")
    else:
        tasks = START.format(wait="        wait: {ssh: true}\n")
    path = root / "guests.yml"
    path.write_text(PLAYBOOK.format(tasks=tasks))
    variables = root / "vars.json"
    variables.write_text(json.dumps({"maqet_home": env["MAQET_HOME"], "vms": vms}))
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                "-e", f"@{variables}", str(path)], env, root / "playbook.out")


def ping_playbook(root: Path, env: dict[str, str]) -> float:
    """Ansible's own fixed cost: a playbook of one ping task on localhost."""
    path = root / "ping.yml"
    path.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.ping:\n")
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path)],
               env, root / "ping.out")


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    files = guest.ensure_ssh_guest()
    server_module = load_image_server()
    with tempfile.TemporaryDirectory(prefix="maqet-bench-guests-") as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        key = guest.make_ssh_keypair(root)
        env = environment(root)
        image_data = qcow2_image(root, "small")
        (root / "www" / "disk.qcow2").write_bytes(image_data)
        image_file = root / "disk.qcow2"
        image_file.write_bytes(image_data)
        big = qcow2_image(root, "big", random_mib=64)
        (root / "www" / "big.qcow2").write_bytes(big)
        seed_cfg = definition("raw", files, "", "", key)["cloud_init"]
        from maqet_engine.cloudinit import normalize

        seed = root / "seed.iso"
        write_seed(build_seed(normalize(seed_cfg), vm_name="raw"), seed)
        out = root / "cmd.out"
        with server_module.serve(root / "www") as server:
            url = server.url("disk.qcow2")
            checksum = f"sha256:{hashlib.sha256(image_data).hexdigest()}"

            def vms(count: int, prefix: str) -> dict[str, Any]:
                return {f"{prefix}{i}": definition(f"{prefix}{i}", files, url, checksum, key)
                        for i in range(count)}

            # warm the cache and the page cache once (not measured)
            maqet(env, out, "image", "pull", url, "--checksum", checksum)
            results: dict[str, list[float]] = {k: [] for k in (
                "raw1", "play1", "cli1", "ping", "raw4", "play4", "miss", "hit")}
            for attempt in range(args.runs):
                results["ping"].append(ping_playbook(root, env))
                results["raw1"].append(raw_to_banner(root, files, image_file, seed, 1))
                one = vms(1, f"p{attempt}-")
                results["play1"].append(playbook(root, env, one, split=False))
                remove_all(env, out, list(one))

                name = f"c{attempt}"
                spec_file = root / f"{name}.json"
                spec_file.write_text(json.dumps(definition(name, files, url, checksum, key)))
                start = time.perf_counter()
                maqet(env, out, "apply", "-d", str(spec_file), "--state", "running")
                maqet(env, out, "wait", name, "--ssh", "--timeout", str(BANNER_TIMEOUT))
                results["cli1"].append(time.perf_counter() - start)
                remove_all(env, out, [name])

                results["raw4"].append(raw_to_banner(root, files, image_file, seed, 4))
                four = vms(4, f"q{attempt}-")
                results["play4"].append(playbook(root, env, four, split=True))
                remove_all(env, out, list(four))

                # the cache: a miss downloads the 64 MiB image, a hit uses it
                maqet(env, out, "image", "prune")
                big_url = server.url("big.qcow2")
                big_sum = f"sha256:{hashlib.sha256(big).hexdigest()}"
                for kind in ("miss", "hit"):
                    name = f"{kind}{attempt}"
                    spec_file = root / f"{name}.json"
                    spec_file.write_text(json.dumps(definition(name, files, big_url, big_sum,
                                                               key, size=None)))
                    results[kind].append(maqet(env, out, "apply", "-d", str(spec_file),
                                               "--state", "running"))
                remove_all(env, out, [f"miss{attempt}", f"hit{attempt}"])
                maqet(env, out, "image", "prune")
                maqet(env, out, "image", "pull", url, "--checksum", checksum)

    m = {k: median(v) for k, v in results.items()}
    print(f"runs: {args.runs} (medians); guest: the ssh guest under {guest.test_accel()}")
    print(f"1 VM   raw QEMU spawn -> SSH banner          {m['raw1']:6.2f} s")
    print(f"1 VM   maqet start + wait --ssh (CLI)        {m['cli1']:6.2f} s  "
          f"x{m['cli1'] / m['raw1']:.2f}")
    print(f"1 VM   playbook (maqet_vm + wait: ssh)       {m['play1']:6.2f} s  "
          f"x{m['play1'] / m['raw1']:.2f}  (target <= 1.2)")
    print(f"       of which Ansible's fixed cost (a playbook of one ping: {m['ping']:.2f} s); "
          f"without it x{(m['play1'] - m['ping']) / m['raw1']:.2f}")
    print(f"4 VMs  raw QEMU, all at once, last banner    {m['raw4']:6.2f} s")
    print(f"4 VMs  playbook (start loop, wait loop)      {m['play4']:6.2f} s  "
          f"x{m['play4'] / m['raw4']:.2f}  (target <= 1.2)")
    print(f"image cache: start with a miss (64 MiB download) {m['miss']:6.2f} s, "
          f"with a hit {m['hit']:6.2f} s  (x{m['miss'] / m['hit']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
