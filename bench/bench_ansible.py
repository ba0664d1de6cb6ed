"""The maqet.vm collection's two benchmarks (issue 5). Prints wall times and ratios
against baselines measured in the same run; asserts nothing.

1. Re-run cost: a playbook takes 10 VMs to ``running`` (one maqet_vm task looped over
   10 items), then runs again. The re-run must report changed=0; its wall time is
   compared with a playbook looping ``ansible.builtin.ping`` over the same 10 items
   (target: <= 1.5x). The VMs boot nothing (TCG, 32 MiB, no disk): the benchmark
   measures the module path, not guest boot (`-S`: the vCPUs never even start).
2. Inventory: ``ansible-inventory --list`` with the maqet plugin over 100 defined VMs,
   start-up included (target: <= 1.2 s), against the same 100 hosts from a static
   YAML inventory.

    .venv/bin/python bench/bench_ansible.py [--runs N] [--vms N] [--inventory-vms N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import description

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

RUNNING = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - maqet.vm.maqet_vm:
        maqet_home: "{{{{ maqet_home }}}}"
        state: running
        config: {{name: "bench{{{{ item }}}}", accel: tcg, memory: 32M, arguments: [-S]}}
      loop: "{{{{ range({n}) | list }}}}"
"""
PING = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.ping:
      loop: "{{{{ range({n}) | list }}}}"
"""
STOP = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - maqet.vm.maqet_vm: {{maqet_home: "{{{{ maqet_home }}}}", name: "bench{{{{ item }}}}",
                          state: absent, force: true, timeout: 5}}
      loop: "{{{{ range({n}) | list }}}}"
"""


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(LC_ALL="C.UTF-8", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               ANSIBLE_COLLECTIONS_PATH=str(REPO), ANSIBLE_HOME=str(root / "ansible"),
               ANSIBLE_LOCAL_TEMP=str(root / "tmp"), ANSIBLE_REMOTE_TMP=str(root / "rtmp"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, MAQET_HOME=str(root / "home"),
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return env


def timed(argv: list[str], env: dict[str, str], out: Path) -> tuple[float, str]:
    """Wall time of one command; output goes to a file (never a pipe)."""
    start = time.perf_counter()
    with out.open("w") as fh:
        proc = subprocess.run(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    text = out.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{text[-3000:]}")
    return elapsed, text


def changed_count(text: str) -> int:
    match = re.search(r"^localhost\s*:.*changed=(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else -1


def bench_rerun(root: Path, env: dict[str, str], n: int, runs: int) -> None:
    playbook = root / "running.yml"
    playbook.write_text(RUNNING.format(n=n))
    ping = root / "ping.yml"
    ping.write_text(PING.format(n=n))
    stop = root / "stop.yml"
    stop.write_text(STOP.format(n=n))
    extra = ["-e", f"maqet_home={root / 'home'}"]
    run = [str(BIN / "ansible-playbook"), *extra]
    try:
        first, text = timed([*run, str(playbook)], env, root / "first.out")
        print(f"first run: {n} VMs to running in {first:.2f} s "
              f"(changed={changed_count(text)})")
        reruns, pings, changed = [], [], set()
        for i in range(runs):
            elapsed, text = timed([*run, str(playbook)], env, root / f"rerun{i}.out")
            reruns.append(elapsed)
            changed.add(changed_count(text))
            elapsed, _ = timed([*run, str(ping)], env, root / f"ping{i}.out")
            pings.append(elapsed)
        rerun, baseline = statistics.median(reruns), statistics.median(pings)
        print(f"re-run (median of {runs}): {rerun:.2f} s, changed={sorted(changed)}")
        print(f"ping loop over {n} items (median of {runs}): {baseline:.2f} s")
        print(f"ratio re-run / ping: {rerun / baseline:.2f}x (target <= 1.5x)")
    finally:
        timed([*run, str(stop)], env, root / "stop.out")


def bench_inventory(root: Path, env: dict[str, str], n: int, runs: int) -> None:
    from maqet_engine.engine import EngineContext, apply, load_definition

    home = root / "inv-home"
    ctx = EngineContext.for_home(str(home), check_mode=False)
    for i in range(n):
        spec = load_definition(ctx, definition={
            "name": f"inv{i:03d}", "memory": "512M", "tags": ["bench", f"shard{i % 4}"],
            "network": [{"type": "user", "forward": [{"host": 20000 + i, "guest": 22}]}]})
        apply(ctx, spec=spec, state="present")
    config = root / "bench.maqet.yml"
    config.write_text(f"plugin: maqet.vm.maqet\nmaqet_home: {home}\ninclude_stopped: true\n"
                      "compose:\n  mib: maqet_memory // 1048576\n")
    static = root / "static.yml"
    static.write_text("all:\n  hosts:\n" + "".join(
        f"    inv{i:03d}: {{ansible_host: 127.0.0.1, ansible_port: {20000 + i}}}\n"
        for i in range(n)))
    argv = [str(BIN / "ansible-inventory"), "--list", "-i"]
    plugin_times, static_times = [], []
    for i in range(runs):
        elapsed, text = timed([*argv, str(config)], env, root / f"inv{i}.out")
        plugin_times.append(elapsed)
        elapsed, _ = timed([*argv, str(static)], env, root / f"static{i}.out")
        static_times.append(elapsed)
    hosts = text.count('"mib"')
    plugin, baseline = statistics.median(plugin_times), statistics.median(static_times)
    print(f"ansible-inventory, maqet plugin, {n} VMs ({hosts} listed, median of {runs}): "
          f"{plugin:.2f} s (target <= 1.2 s)")
    print(f"ansible-inventory, static YAML, same {n} hosts: {baseline:.2f} s")
    print(f"ratio plugin / static: {plugin / baseline:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vms", type=int, default=10)
    parser.add_argument("--inventory-vms", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maqet-bench-ansible-") as tmp:
        root = Path(tmp)
        env = environment(root)
        print("== re-run of a playbook that took VMs to running")
        bench_rerun(root, env, args.vms, args.runs)
        print("== inventory")
        bench_inventory(root, env, args.inventory_vms, args.runs)


if __name__ == "__main__":
    main()
