"""Running the real ``ansible-playbook`` against the inventory of a :class:`netns.Hypervisors`
run: SSH to every host with host key checking on, Ansible's state and temp dirs under the
test's directory, output in files (never a pipe a reader might close early)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ansible_run import Run, run_logged

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOK_TIMEOUT = 300.0  # a few tasks on two hosts: ~3-6 s


def control_path_dir(root: Path) -> Path:
    """Where ansible's ssh keeps its ControlPersist sockets for a sandbox in ``root``.
    A socket is <dir>/<10 hex>.<16 random> while ssh creates it: the whole path must fit
    a unix socket's 107 bytes."""
    path = root / "cp"
    if len(os.fsencode(path)) > 107 - 1 - 10 - 17:
        raise ValueError(f"{path} is too long for ssh's control sockets: use a shorter "
                         "directory (pytest --basetemp)")
    return path


def ansible_env(root: Path) -> dict[str, str]:
    """This process's environment without ANSIBLE_*, plus a sandbox under ``root``.
    Host key checking stays on (Ansible's default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        LC_ALL="C.UTF-8",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(REPO),
        ANSIBLE_HOME=str(root / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(root / "ansible-tmp"),
        ANSIBLE_REMOTE_TMP=str(root / "ansible-remote"),
        # ssh's ControlPersist sockets: by default under ~/.ansible/cp even with
        # ANSIBLE_HOME set (seen with ansible-core 2.19).
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_path_dir(root)),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
    )
    return env


def run_playbook(inventory: Path, playbook: Path, root: Path, *args: str,
                 extra_vars: dict[str, Any] | None = None,
                 timeout: float = PLAYBOOK_TIMEOUT) -> Run:
    """``ansible-playbook -i inventory [-e @vars] *args playbook`` in ``root``, with
    :func:`ansible_env`; stdout and stderr go to files under ``root/logs``."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    count = len(list(logs.glob("*.out"))) + 1
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory)]
    if extra_vars:
        vars_file = root / f"vars-{count:02d}.json"
        vars_file.write_text(json.dumps(extra_vars))
        argv += ["-e", f"@{vars_file}"]
    argv += [*args, str(playbook)]
    return run_logged(argv, logs, count, env=ansible_env(root), cwd=root, timeout=timeout)
