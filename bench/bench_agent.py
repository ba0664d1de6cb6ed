"""Into the guest through its agent (issue 11). Prints wall times, throughputs and
ratios against baselines measured in the same run; asserts nothing.

1. One Ansible ``command`` task (a Python module), and one ``raw`` task (no Python: the
   transport alone), through the ``maqet.vm.agent`` connection (its host from the
   inventory plugin, which loads the connection in Ansible's main process, and from a
   static inventory), against the same task over SSH into the *same* guest (the ssh
   guest: dropbear, python3, qemu-ga; one VM with the agent channel and a user-mode NIC
   forwarding SSH). Runs are interleaved, so other jobs' load falls on each alike.
   Measured as the
   cost of one more task (a playbook with 1 + K tasks minus one with 1, divided by K:
   Ansible's own start-up cancels out), and as the wall time of a one-task playbook.
   SSH gets Ansible's defaults (ControlPersist) and, separately, pipelining. Target:
   the agent faster than SSH.
2. Copying a 10 MiB file into the guest through maqet (the facade's ``put_file``: the
   runner's stream, 1 MiB guest-file-write commands; with and without the sha256 check
   in the guest) against a raw guest-file-write loop on the agent socket of a QEMU of
   its own (same guest, 1 MiB and 48 KiB chunks), and ``maqet cp`` (the CLI, start-up
   included). Target: maqet <= 1.2x raw. Out of the guest too, and scp for scale.

    .venv/bin/python bench/bench_agent.py [--runs N] [--tasks K] [--mib N] [--only tasks|copy]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import description

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "guest"))
sys.path.insert(0, str(REPO))

import guest  # noqa: E402  (tests/guest/guest.py: the ssh guest)

from maqet_engine import engine  # noqa: E402

MiB = 1024 * 1024
TASKS = {"command": "    - ansible.builtin.command: /bin/true\n      changed_when: false\n",
         "raw": "    - ansible.builtin.raw: /bin/true\n      changed_when: false\n"}


def playbook(path: Path, tasks: int, module: str = "command") -> Path:
    path.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n" + TASKS[module] * tasks)
    return path


def run_playbook(book: Path, inventory: Path, env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book)],
                              env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed:\n{log.read_text()[-3000:]}")
    return elapsed


def environment(root: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(LC_ALL="C.UTF-8", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               ANSIBLE_COLLECTIONS_PATH=str(REPO), ANSIBLE_HOME=str(root / "ansible"),
               ANSIBLE_LOCAL_TEMP=str(root / "tmp"), ANSIBLE_REMOTE_TMP="/tmp/.ansible-bench",
               MAQET_HOME=str(root / "home"), PYTHONPATH=str(REPO),
               ANSIBLE_HOST_KEY_CHECKING="true", **more)
    return env


def start_vm(ctx: Any, root: Path, key: guest.SSHKeyPair) -> tuple[str, int, Path]:
    """The ssh guest with the agent channel and SSH forwarded (slirp picks the port)."""
    files = guest.ensure_ssh_guest()
    data = guest.guest_definition(
        "bench1", files, append=guest.ssh_guest_append(key.public_line), agent=True,
        arguments=["-no-reboot", "-device", "virtio-rng-pci",
                   "-netdev", "user,id=ssh0,restrict=on,hostfwd=tcp:127.0.0.1:0-:22",
                   "-device", "virtio-net-pci,netdev=ssh0"])
    engine.apply(ctx, spec=engine.load_definition(ctx, definition=data), state="running")
    host_keys = guest.console_host_keys(ctx.paths, "bench1")
    usernet = engine.qmp(ctx, "bench1", "human-monitor-command",
                         {"command-line": "info usernet"}).data
    port = guest.forwarded_port(usernet)
    known = root / "known_hosts"
    known.write_text("".join(guest.known_hosts_line(k, "127.0.0.1", port) + "\n"
                             for k in host_keys))
    engine.guest_exec(ctx, "bench1", ["true"], agent_timeout=120)
    return "bench1", port, known


def bench_tasks(root: Path, ctx: Any, vm: str, port: int, known: Path,
                key: guest.SSHKeyPair, runs: int, tasks: int) -> None:
    ssh_args = " ".join(["-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes",
                         "-o", "StrictHostKeyChecking=yes"])
    inventories = {
        "agent.maqet.yml": f"plugin: maqet.vm.maqet\nmaqet_home: {ctx.paths.home}\n"
                           "agent_connection: true\nssh_guest_port: 0\ncompose:\n"
                           "  ansible_python_interpreter: \"'/usr/bin/python3'\"\n",
        "agent": f"{vm} ansible_connection=maqet.vm.agent ansible_maqet_home={ctx.paths.home} "
                 "ansible_python_interpreter=/usr/bin/python3\n",
        "ssh": f"{vm} ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
               f"ansible_ssh_private_key_file={key.private_key} "
               f"ansible_ssh_common_args='{ssh_args}' "
               "ansible_python_interpreter=/usr/bin/python3\n",
    }
    for module in ("command", "raw"):
        _bench_module(root, inventories, module, runs, tasks)


def _inventory_name(kind: str) -> str:
    return kind if kind.endswith(".yml") else f"{kind}.ini"


def _bench_module(root: Path, inventories: dict[str, str], module: str, runs: int,
                  tasks: int) -> None:
    """One more ``module`` task per way (see the module doc)."""
    one = playbook(root / "one.yml", 1, module)
    many = playbook(root / "many.yml", 1 + tasks, module)
    ways = (("agent, inventory plugin", "agent.maqet.yml", {}),
            ("agent, static inventory", "agent", {}),
            ("ssh, Ansible's defaults", "ssh", {}),
            ("ssh + pipelining", "ssh", {"ANSIBLE_PIPELINING": "true"}))
    times: dict[str, tuple[list[float], list[float]]] = {way[0]: ([], []) for way in ways}
    for kind, text in inventories.items():
        (root / _inventory_name(kind)).write_text(text)
    for _label, kind, extra in ways:  # warm up (the guest's page cache, ControlPersist)
        run_playbook(one, root / _inventory_name(kind), environment(root, **extra),
                     root / "warm.log")
    # Interleaved, so that the load of other jobs on the host falls on every way alike.
    for i in range(runs):
        for label, kind, extra in ways:
            env = environment(root, **extra)
            inventory = root / _inventory_name(kind)
            times[label][0].append(run_playbook(one, inventory, env, root / f"{kind}-1-{i}.log"))
            times[label][1].append(run_playbook(many, inventory, env, root / f"{kind}-n-{i}.log"))
    rows = []
    for label, _kind, _extra in ways:
        ones, manys = times[label]
        per_task = (statistics.median(manys) - statistics.median(ones)) / tasks
        rows.append((label, statistics.median(ones), per_task))
    agent = rows[0]
    print(f"one more `{module}` task (median of {runs}, {tasks} extra tasks), and a whole "
          "one-task playbook:")
    for label, whole, per_task in rows:
        ratio = "" if label == agent[0] else f"  (agent / this: {agent[2] / per_task:.2f}x)"
        print(f"  {label:25s} per task {per_task * 1000:7.0f} ms   playbook {whole:6.2f} s"
              f"{ratio}")


def raw_guest_write(data: bytes, chunk: int) -> float:
    """A QEMU of its own (same guest), its agent socket bound here, a plain
    guest-file-write loop: the time of the writes (open to close)."""
    files = guest.ensure_ssh_guest()
    sockdir = Path(tempfile.mkdtemp(prefix="maqet-bench-qga-", dir="/tmp"))
    qmp, serial, qga = sockdir / "q.sock", sockdir / "s.sock", sockdir / "a.sock"
    listeners = [guest.listen_unix(p) for p in (qmp, serial, qga)]
    fds = [s.fileno() for s in listeners]
    argv = [shutil.which("qemu-system-x86_64") or "qemu-system-x86_64", "-machine", "q35",
            "-accel", guest.test_accel(), "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-kernel", str(files.kernel), "-initrd", str(files.initrd),
            "-append", guest.SSH_GUEST_APPEND, "-device", "virtio-rng-pci",
            "-chardev", f"socket,id=qmp0,fd={fds[0]},server=on,wait=off",
            "-mon", "chardev=qmp0,mode=control",
            "-chardev", f"socket,id=s0,fd={fds[1]},server=on,wait=off", "-serial", "chardev:s0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=qga0,fd={fds[2]},server=on,wait=off",
            "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
    qemu = subprocess.Popen(argv, pass_fds=fds, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for sock in listeners:
        sock.close()
    try:
        with guest.SerialConsole(serial) as console:  # drained, or the guest stalls
            console.wait_for(guest.SSH_GUEST_MARKER, timeout=120)
            agent = guest.GuestAgent(qga)
            agent.sync(120)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                handle = agent.execute("guest-file-open", {"path": "/tmp/raw", "mode": "wb"})
                for offset in range(0, len(data), chunk):
                    agent.execute("guest-file-write", {
                        "handle": handle,
                        "buf-b64": base64.b64encode(data[offset:offset + chunk]).decode()},
                        timeout=120)
                agent.execute("guest-file-close", {"handle": handle})
                times.append(time.perf_counter() - start)
            return statistics.median(times)
    finally:
        qemu.kill()
        qemu.wait(30)
        shutil.rmtree(sockdir, ignore_errors=True)


def bench_copy(root: Path, ctx: Any, vm: str, port: int, known: Path,
               key: guest.SSHKeyPair, runs: int, mib: int) -> None:
    data = os.urandom(mib * MiB)
    source = root / "payload.bin"
    source.write_bytes(data)
    size_kb = len(data) / 1024

    def rate(seconds: float) -> str:
        return f"{seconds:6.2f} s  {size_kb / seconds:7.0f} KB/s"

    raw = raw_guest_write(data, 1 * MiB)
    raw_small = raw_guest_write(data, 48 * 1024)
    put_verify, put_plain, cli, get_plain = [], [], [], []
    env = environment(root)
    for _ in range(runs):
        start = time.perf_counter()
        engine.put_file(ctx, vm, source, "/tmp/maqet.bin", mode=None, verify=False)
        put_plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.put_file(ctx, vm, source, "/tmp/maqet.bin")
        put_verify.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "maqet_engine", "cp", str(source),
                        f"{vm}:/tmp/cli.bin"], env=env, check=True, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.fetch_file(ctx, vm, "/tmp/maqet.bin", root / "back.bin", verify=False,
                          preserve_mode=False)
        get_plain.append(time.perf_counter() - start)
    assert hashlib.sha256((root / "back.bin").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    scp = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["scp", "-q", *guest.ssh_options(key.private_key, known), "-P", str(port),
                        str(source), "root@127.0.0.1:/tmp/scp.bin"], check=True)
        scp.append(time.perf_counter() - start)
    plain, verified = statistics.median(put_plain), statistics.median(put_verify)
    print(f"copy {mib} MiB into the guest (median of {runs}; raw: median of 3):")
    print(f"  raw guest-file-write loop, 1 MiB chunks    {rate(raw)}")
    print(f"  raw guest-file-write loop, 48 KiB chunks   {rate(raw_small)}")
    print(f"  maqet put_file, no check                   {rate(plain)}   {plain / raw:.2f}x raw "
          "(target <= 1.2x)")
    print(f"  maqet put_file + chmod + sha256 in guest   {rate(verified)}   "
          f"{verified / raw:.2f}x raw")
    print(f"  maqet cp (CLI, start-up and checks)        {rate(statistics.median(cli))}")
    print(f"  scp over SSH (same guest)                  {rate(statistics.median(scp))}")
    print(f"copy {mib} MiB out of the guest:")
    print(f"  maqet fetch_file, no check                 {rate(statistics.median(get_plain))}")
    print("  (Proxmox users report 90-350 KB/s for its agent file transfer.)")


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--only", choices=("tasks", "copy"), help="run one part only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maqet-bench-agent-") as tmp:
        root = Path(tmp)
        ctx = engine.EngineContext.for_home(str(root / "home"))
        key = guest.make_ssh_keypair(root)
        vm, port, known = start_vm(ctx, root, key)
        try:
            print(f"== the ssh guest, TCG, agent channel + SSH on 127.0.0.1:{port}")
            if args.only != "copy":
                bench_tasks(root, ctx, vm, port, known, key, args.runs, args.tasks)
            if args.only != "tasks":
                bench_copy(root, ctx, vm, port, known, key, args.runs, args.mib)
        finally:
            engine.apply(ctx, name=vm, state="absent", force=True, purge=True)


if __name__ == "__main__":
    main()
