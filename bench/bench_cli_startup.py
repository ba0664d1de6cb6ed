"""CLI start-up cost: ``maqet --version`` and ``maqet ls`` against bare Python.

Prints wall-time medians and the ratio to ``python -c pass`` measured in the same
run, plus the heavy modules each command imported (``-X importtime``). Target:
``maqet ls`` under 60 ms wall on the reference machine. Not a test: it asserts
nothing.

    .venv/bin/python bench/bench_cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compile_package

HEAVY = ("asyncio", "qemu.qmp", "yaml", "logging", "maqet_engine.definition", "pycdlib")


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], env=env,
                          capture_output=True, text=True, check=True)
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:")}
    return sorted(names & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    compile_package()
    maqet = str(Path(sys.executable).with_name("maqet"))
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, MAQET_HOME=home)
        base = wall([sys.executable, "-c", "pass"], env, runs)
        print(f"{'command':<22}{'median ms':>10}{'x python':>10}  heavy imports")
        print(f"{'python -c pass':<22}{base * 1000:>10.1f}{1.0:>10.2f}")
        for args in (["--version"], ["ls"]):
            argv = [maqet, *args]
            t = wall(argv, env, runs)
            heavy = heavy_imports([sys.executable, "-m", "maqet_engine", *args], env)
            print(f"{'maqet ' + ' '.join(args):<22}{t * 1000:>10.1f}{t / base:>10.2f}  "
                  f"{', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
