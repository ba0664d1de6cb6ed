# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: agent
short_description: Run tasks in a maqet VM through its guest agent, without a network
version_added: 0.1.0
author:
  - maqet developers (@maqet)
description:
  - Runs commands in a maqet VM, and copies files in and out of it, through the QEMU
    guest agent (qemu-ga) on the VM's agent channel (its definition sets C(agent) to V(true)).
    The guest needs no network, no SSH server and no account, only qemu-ga on the
    virtio-serial port C(org.qemu.guest_agent.0), and a POSIX shell.
  - The plugin runs on the controller and talks to the VM's runner through the maqet
    engine there, so the controller must be the VM's hypervisor (the maqet installation
    of O(maqet_home)). The runner owns the agent channel; each task's commands go
    through it one at a time.
  - Commands run as the user qemu-ga runs as (root on Linux); C(remote_user) is ignored.
    C(become) works by wrapping the command as usual (C(su), C(sudo) to another user need
    no password from root); a C(sudo) password is given on the command's stdin
    (C(sudo -S)); C(su) with a password needs a terminal, which the agent has not.
  - Module payloads go in the command's stdin (pipelining, on by default); each command
    and its output travel whole (qemu-ga returns a command's output when it ends, at most
    16 MiB of each stream; more fails the task). Files are copied in 1 MiB agent commands.
  - A VM whose agent does not answer within O(timeout) (no channel, qemu-ga not running
    or not yet started in the guest, a hung agent) is unreachable with a message saying
    which; a guest that reboots during a play is back once its qemu-ga answers again.
  - The inventory plugin P(maqet.vm.maqet#inventory) sets this connection for VMs with an
    agent channel with its O(maqet.vm.maqet#inventory:agent_connection) option.
requirements:
  - The maqet engine (Python package maqet_engine) in the Python that runs Ansible.
  - qemu-ga and C(/bin/sh) in the guest.
options:
  vm:
    description:
      - Name of the VM in the maqet installation. Default the inventory name of the host.
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_maqet_vm
  maqet_home:
    description:
      - Directory of the maqet installation the VM belongs to, like E(MAQET_HOME). Not set,
        and E(MAQET_HOME) not set either, the XDG directories of the user running Ansible.
    type: str
    env:
      - name: MAQET_HOME
    vars:
      - name: ansible_maqet_home
  timeout:
    description:
      - Seconds the guest agent gets to answer each request, including the wait for it to
        come up in a guest that is still booting or rebooting. After that the host is
        unreachable. Commands themselves may run longer (use the task's C(timeout)).
    type: int
    default: 30
    env:
      - name: ANSIBLE_TIMEOUT
    ini:
      - section: defaults
        key: timeout
    vars:
      - name: ansible_timeout
      - name: ansible_maqet_agent_timeout
  pipelining:
    description:
      - Send module payloads on the command's stdin instead of copying them into the
        guest first (one agent command per module instead of several). The agent has no
        terminal, so nothing speaks against it; on by default.
    default: true
    type: boolean
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
  verify_transfers:
    description:
      - Compare the sha256 of every copied file on both sides (C(sha256sum) in the guest).
        Ansible's own C(copy), C(template) and C(fetch) compare checksums anyway, so this
        costs an extra guest command per file for little; off by default.
    type: bool
    default: false
    vars:
      - name: ansible_maqet_verify_transfers
notes:
  - The agent's working directory and environment are those of qemu-ga; the plugin sets
    E(HOME) (from C(/etc/passwd), else C(/root)) when qemu-ga has none, so that Ansible's
    C(~/.ansible/tmp) is a real directory.
  - More in docs/guest-agent.md of the maqet repository (how the channel works, what was
    measured).
"""

EXAMPLES = r"""
# hosts.ini: a VM without a network, reached through its agent
# [guests]
# vm1 ansible_connection=maqet.vm.agent ansible_maqet_home=/srv/maqet

- name: Configure a guest that has no network
  hosts: guests
  gather_facts: true
  tasks:
    - name: Install a file
      ansible.builtin.copy:
        src: motd
        dest: /etc/motd
        mode: "0644"

    - name: Run something as another user
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: nobody
      changed_when: false
"""

import re
import shlex

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

try:
    from maqet_engine import engine
    from maqet_engine.engine import guest_exec as _guest_calls  # noqa: F401 - loaded now
    from maqet_engine.errors import AgentUnavailable, MaqetError, RunnerUnavailable, \
        StateConflict, VMNotFound
except ImportError:
    engine = None

    class MaqetError(Exception):
        pass

    AgentUnavailable = RunnerUnavailable = StateConflict = VMNotFound = MaqetError

display = Display()

# The agent has neither a login shell nor HOME: give commands a HOME (Ansible's remote
# tmp is ~/.ansible/tmp) from the passwd entry of the user qemu-ga runs as.
_PROLOGUE = ('[ -n "${HOME:-}" ] || HOME=$( (getent passwd "$(id -u)" 2>/dev/null || '
             'grep "^[^:]*:[^:]*:$(id -u):" /etc/passwd) | cut -d: -f6 | head -n1); '
             'export HOME="${HOME:-/root}"; ')
_UNREACHABLE = (AgentUnavailable, RunnerUnavailable, StateConflict, VMNotFound)
_SHELLS = ("sh", "bash", "dash", "ash", "ksh", "zsh")


def _shell_argv(cmd):
    """The argv that runs the shell command ``cmd`` with a HOME. Ansible's commands are
    mostly ``/bin/sh -c '...'`` already: then that shell runs the prologue too, saving a
    process (each costs the guest milliseconds under emulation)."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = []
    if len(words) == 3 and words[1] == "-c" and words[0].startswith("/") \
            and words[0].rsplit("/", 1)[-1] in _SHELLS:
        return [words[0], "-c", _PROLOGUE + words[2]]
    return ["/bin/sh", "-c", _PROLOGUE + cmd]


def _strip_through(marker, data):
    """``data`` without everything up to and including the first ``marker`` and the
    blanks after it (what become prints before the command's own output)."""
    return re.sub(br"^.*?" + re.escape(to_bytes(marker)) + br"\s*", b"", data, count=1,
                  flags=re.DOTALL)


class Connection(ConnectionBase):
    """Commands and files through the maqet runner's guest agent channel."""

    transport = "maqet.vm.agent"
    has_pipelining = True
    has_tty = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ctx = None
        self._vm = None

    def _connect(self):
        if engine is None:
            raise AnsibleError(
                "the maqet.vm.agent connection needs the maqet engine (Python package "
                "maqet_engine) in the Python that runs Ansible: pip install maqet")
        if not self._connected:
            self._vm = self.get_option("vm")
            if not self._vm:
                raise AnsibleError("maqet.vm.agent: no VM name (set ansible_maqet_vm)")
            self._ctx = engine.EngineContext.for_home(self.get_option("maqet_home"))
            display.vvv("maqet.vm.agent: VM {0} of {1}".format(
                self._vm, self.get_option("maqet_home") or "the default maqet home"),
                host=self._vm)
            self._connected = True
        return self

    def _agent_timeout(self):
        timeout = self.get_option("timeout")
        return float(timeout) if timeout and timeout > 0 else 30.0

    def _fail(self, err, doing):
        message = "maqet.vm.agent: {0} in VM {1}: {2}".format(doing, self._vm, err)
        if isinstance(err, _UNREACHABLE):
            raise AnsibleConnectionFailure(message) from err
        raise AnsibleError(message) from err

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        display.vvv("EXEC {0}".format(cmd), host=self._vm)
        stdin = in_data or b""
        becoming = bool(sudoable and self.become and getattr(self.become, "_id", None))
        if becoming and self.become.expect_prompt():
            if self.become.name != "sudo":
                raise AnsibleError(
                    "maqet.vm.agent: become_method {0} with a password needs a terminal, "
                    "which the guest agent has not; use sudo (its -S reads the password "
                    "from stdin), or no password (qemu-ga runs as root)".format(
                        self.become.name))
            stdin = to_bytes(self.become.get_option("become_pass") or "") + b"\n" + stdin
        argv = _shell_argv(to_text(cmd))
        try:
            done = engine.guest_exec(self._ctx, self._vm, argv,
                                     stdin=stdin if (stdin or in_data is not None) else None,
                                     agent_timeout=self._agent_timeout()).data
        except MaqetError as err:
            self._fail(err, "cannot run a command")
        if done["stdout_truncated"] or done["stderr_truncated"]:
            raise AnsibleError("maqet.vm.agent: the command's output in VM {0} is larger than "
                               "the 16 MiB the guest agent keeps; it was cut. Write it to a "
                               "file in the guest and fetch that".format(self._vm))
        stdout, stderr = done["stdout"], done["stderr"]
        code = done["exitcode"] if done["exitcode"] is not None else 128 + (done["signal"] or 0)
        if becoming:
            stdout, stderr = self._become_output(stdout, stderr)
        return code, stdout, stderr

    def _become_output(self, stdout, stderr):
        """The command's output without become's preamble (its success marker, and a
        sudo password prompt); a become that did not succeed is an error."""
        become = self.become
        if not become.check_success(stdout):
            raise AnsibleError("maqet.vm.agent: become ({0}) did not succeed in VM {1}:\n"
                               "{2}{3}".format(become.name, self._vm, to_text(stdout[-2000:]),
                                               to_text(stderr[-2000:])))
        if become.expect_prompt() and become.prompt:
            stderr = _strip_through(become.prompt, stderr)
        return _strip_through(become.success, stdout), stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        display.vvv("PUT {0} TO {1}".format(in_path, out_path), host=self._vm)
        import os

        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: {0}".format(in_path))
        try:
            engine.put_file(self._ctx, self._vm, in_path, self._guest_path(out_path),
                            mode=None, verify=self.get_option("verify_transfers"),
                            agent_timeout=self._agent_timeout())
        except MaqetError as err:
            self._fail(err, "cannot copy {0} to {1}".format(in_path, out_path))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        display.vvv("FETCH {0} TO {1}".format(in_path, out_path), host=self._vm)
        try:
            engine.fetch_file(self._ctx, self._vm, self._guest_path(in_path), out_path,
                              preserve_mode=False, verify=self.get_option("verify_transfers"),
                              agent_timeout=self._agent_timeout())
        except MaqetError as err:
            self._fail(err, "cannot fetch {0}".format(in_path))

    def _guest_path(self, path):
        """An absolute guest path (Ansible gives ~/... paths after expanding them in the
        guest; a relative one is relative to HOME, as over SSH)."""
        if path.startswith("/"):
            return path
        code, out, _err = self.exec_command(
            "printf %s \"$HOME\"/" + shlex.quote(path.lstrip("~/")), sudoable=False)
        if code != 0 or not out.startswith(b"/"):
            raise AnsibleError("maqet.vm.agent: cannot resolve {0} in VM {1}".format(
                path, self._vm))
        return to_text(out)

    def reset(self):
        self.close()

    def close(self):
        self._connected = False
