"""Helpers of the Ansible end-to-end tests: run the real ``ansible-playbook`` and
``ansible-inventory`` against the collection in the working tree, in a sandbox
(ANSIBLE_HOME, temp dirs and MAQET_HOME under the test's tmp dir), and clean up
every VM a test started.

Not a conftest on purpose: test modules import it by name, and a second module
named ``conftest`` on ``sys.path`` would shadow the integration tests' one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from ansible_run import Run, run_logged

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
BIN = Path(sys.executable).parent
QEMU = shutil.which("qemu-system-x86_64")

# Bounded waits (seconds), with what they usually take here.
PLAYBOOK_TIMEOUT = 600.0  # a whole playbook with boots and stops under TCG: ~10-30 s
INVENTORY_TIMEOUT = 120.0  # ansible-inventory: ~1 s
EXIT_GRACE = 5.0  # a runner's exit after its stop reply: milliseconds


class AnsibleSandbox:
    """Environment and helpers for running ansible against one MAQET_HOME."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "maqet-home"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            LC_ALL="C.UTF-8",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            ANSIBLE_COLLECTIONS_PATH=str(REPO),
            ANSIBLE_HOME=str(root / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(root / "ansible-tmp"),
            ANSIBLE_REMOTE_TMP=str(root / "ansible-remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            MAQET_HOME=str(self.home),
        )
        self.env = env
        self.inventory = root / "hosts.ini"
        self.inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        self._count = 0

    def _run(self, argv: list[str], timeout: float, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> Run:
        self._count += 1
        return run_logged(argv, self.logs, self._count, env={**self.env, **(env or {})},
                          cwd=cwd or self.root, timeout=timeout)

    def playbook(self, name: str, *, extra_vars: dict[str, Any] | None = None,
                 args: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> Run:
        """Run playbooks/<name> with ``maqet_home`` and ``extra_vars`` as variables;
        ``prefix`` runs it through a command (``ip netns exec NS``), ``env`` adds to the
        sandbox's environment."""
        variables = {"maqet_home": str(self.home), **(extra_vars or {})}
        vars_file = self.root / f"vars-{self._count + 1:02d}.json"
        vars_file.write_text(json.dumps(variables))
        argv = [*prefix, str(BIN / "ansible-playbook"), "-i", str(self.inventory),
                "-e", f"@{vars_file}", *args, str(PLAYBOOKS / name)]
        return self._run(argv, PLAYBOOK_TIMEOUT, env=env)

    def inventory_list(self, config: Path, *more: str) -> Run:
        argv = [str(BIN / "ansible-inventory"), "-i", str(config), *more]
        return self._run(argv, INVENTORY_TIMEOUT, cwd=config.parent)

    # --- cleanup ------------------------------------------------------------------------
    def our_pids(self) -> list[int]:
        """Processes (runners, QEMU) whose command line mentions this MAQET_HOME."""
        from procs import pids_mentioning  # tests/support (on sys.path via tests/conftest.py)

        from maqet_engine.paths import resolve_paths

        paths = resolve_paths({"MAQET_HOME": str(self.home)})
        return pids_mentioning(self.home, paths.runtime, paths.data)

    def cleanup(self) -> list[str]:
        """Stop and remove every VM of this home through the engine, then kill by PID
        whatever is left. Returns what had to be killed (should be nothing)."""
        from procs import wait_pid_exit

        from maqet_engine.engine import EngineContext, apply, list_vms
        from maqet_engine.errors import MaqetError

        ctx = EngineContext.for_home(str(self.home), check_mode=False)
        names = [vm["name"] for vm in list_vms(ctx).data]
        for name in names:
            with contextlib.suppress(MaqetError):
                apply(ctx, name=name, state="absent", force=True, timeout=5)
        # A runner lets go of its socket just before it exits: give it a moment.
        for pid in self.our_pids():
            wait_pid_exit(pid, EXIT_GRACE)
        killed = []
        for pid in self.our_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(str(pid))
        return killed


def guest_definition(name: str, **more: Any) -> dict[str, Any]:
    """A definition of the tiny test guest (TCG), as a maqet_vm ``definition``."""
    import guest  # tests/guest/guest.py, on sys.path through tests/conftest.py

    more.setdefault("tags", ["e2e"])
    return guest.guest_definition(name, **more)


