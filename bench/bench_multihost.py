"""Multi-host benchmarks (issue 12). Prints wall times and ratios against baselines measured
in the same run; asserts nothing. Needs root (network namespaces, like tests/multihost).

1. Inventory: ``ansible-inventory --list`` with the maqet plugin over 2 hypervisors x 100
   defined VMs (two network namespaces, each with its own sshd and maqet home; one SSH
   round trip per hypervisor, in parallel) against the same 200 VMs in one local home
   (target: <= 1.5x).
2. Playbook re-run: one play over both hypervisors takes 5 VMs each to ``running`` (one
   maqet_vm task looped over 5 items; firmware-only, TCG, ``-S``: nothing boots), then runs
   again. The re-run must report changed=0; its wall time is compared with the same play
   looping ``ansible.builtin.ping`` over 5 items (target: <= 1.5x).

    sudo .venv/bin/python bench/bench_multihost.py [--runs N] [--vms N] [--inventory-vms N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import description

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "support"))

from fleet import fleet_inventory, plugin_config  # noqa: E402
from multihost import BIN, ansible_env  # noqa: E402
from netns import Hypervisors  # noqa: E402

CONVERGE = """\
- hosts: hypervisors
  gather_facts: false
  environment:
    PYTHONPATH: "{{ engine_pythonpath }}"
  tasks:
    - maqet.vm.maqet_vm:
        maqet_home: "{{ maqet_home }}"
        state: "{{ vm_state }}"
        force: true
        definition: {name: "bench{{ item }}", accel: tcg, memory: 32M, arguments: [-S]}
      loop: "{{ range(n | int) | list }}"
"""
PING = """\
- hosts: hypervisors
  gather_facts: false
  tasks:
    - ansible.builtin.ping:
      loop: "{{ range(n | int) | list }}"
"""


def timed(argv: list[str], env: dict[str, str], out: Path, cwd: Path) -> tuple[float, str]:
    """Wall time of one command; output goes to a file (never a pipe)."""
    start = time.perf_counter()
    with out.open("w") as fh:
        proc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                              check=False, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    text = out.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{text[-3000:]}")
    return elapsed, text


def define(home: Path, names: list[str]) -> None:
    from maqet_engine.engine import EngineContext, apply, load_definition

    ctx = EngineContext.for_home(str(home), check_mode=False)
    for i, name in enumerate(names):
        spec = load_definition(ctx, definition={
            "name": name, "memory": "512M", "tags": ["bench", f"shard{i % 4}"],
            "network": [{"type": "user", "forward": [{"host": 20000 + i, "guest": 22}]}]})
        apply(ctx, spec=spec, state="present")


def bench_inventory(hv: Hypervisors, root: Path, env: dict[str, str], n: int, runs: int) -> None:
    names = [f"vm{i:03d}" for i in range(n)]
    for host in hv:
        define(host.maqet_home, names)
    local_home = root / "local-home"
    define(local_home, [f"{host.name}-{name}" for host in hv for name in names])
    fleet = plugin_config(hv, root / "fleet.maqet.yml", include_stopped=True,
                          name_template="{{ hypervisor }}-{{ name }}")
    local = root / "local.maqet.yml"
    local.write_text(f"plugin: maqet.vm.maqet\nmaqet_home: {local_home}\ninclude_stopped: true\n")
    argv = [str(BIN / "ansible-inventory"), "--list", "-i"]
    fleet_times, local_times = [], []
    for i in range(runs):
        elapsed, text = timed([*argv, str(fleet)], env, root / f"fleet{i}.out", root)
        fleet_times.append(elapsed)
        listed = text.count('"maqet_hypervisor":')
        elapsed, _ = timed([*argv, str(local)], env, root / f"local{i}.out", root)
        local_times.append(elapsed)
    remote, baseline = statistics.median(fleet_times), statistics.median(local_times)
    print(f"ansible-inventory, 2 hypervisors x {n} VMs over SSH ({listed} listed, median of "
          f"{runs}): {remote:.2f} s")
    print(f"ansible-inventory, one local home of {2 * n} VMs: {baseline:.2f} s")
    print(f"ratio fleet / local: {remote / baseline:.2f}x (target <= 1.5x)")


def changed(text: str) -> list[int]:
    return [int(c) for c in re.findall(r"^hv\d+\s*:.*changed=(\d+)", text, re.MULTILINE)]


def bench_rerun(hv: Hypervisors, root: Path, env: dict[str, str], n: int, runs: int) -> None:
    inventory = fleet_inventory(hv, root / "inventory.yml")
    converge, ping = root / "converge.yml", root / "ping.yml"
    converge.write_text(CONVERGE)
    ping.write_text(PING)
    run = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"n={n}"]
    try:
        first, text = timed([*run, "-e", "vm_state=running", str(converge)], env,
                            root / "first.out", root)
        print(f"first run: 2 x {n} VMs to running in {first:.2f} s (changed={changed(text)})")
        reruns, pings, seen = [], [], set()
        for i in range(runs):
            elapsed, text = timed([*run, "-e", "vm_state=running", str(converge)], env,
                                  root / f"rerun{i}.out", root)
            reruns.append(elapsed)
            seen.update(changed(text))
            elapsed, _ = timed([*run, str(ping)], env, root / f"ping{i}.out", root)
            pings.append(elapsed)
        rerun, baseline = statistics.median(reruns), statistics.median(pings)
        print(f"re-run over 2 hypervisors (median of {runs}): {rerun:.2f} s, "
              f"changed={sorted(seen)}")
        print(f"ping loop over 2 x {n} items (median of {runs}): {baseline:.2f} s")
        print(f"ratio re-run / ping: {rerun / baseline:.2f}x (target <= 1.5x)")
    finally:
        timed([*run, "-e", "vm_state=absent", str(converge)], env, root / "stop.out", root)


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vms", type=int, default=5)
    parser.add_argument("--inventory-vms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maqet-bench-multihost-") as tmp, \
            Hypervisors(2) as hv:
        root = Path(tmp)
        env = ansible_env(root)
        env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "false"
        print("== inventory")
        bench_inventory(hv, root, env, args.inventory_vms, args.runs)
        print("== re-run of a playbook over two hypervisors")
        bench_rerun(hv, root, env, args.vms, args.runs)


if __name__ == "__main__":
    main()
