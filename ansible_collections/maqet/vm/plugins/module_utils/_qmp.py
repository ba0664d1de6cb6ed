# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of maqet_qmp (private to this collection): one request to the VM's runner.

Every request goes through the runner's control socket (``lifecycle.call``); the
module never talks to QEMU's QMP socket itself. ``changed`` is decided here:
read-only commands (``query-*`` and friends) never change anything, input (keys,
text) always does, a screendump only when the picture differs from ``dest``.
"""

from __future__ import annotations

import hashlib
import os

from ansible_collections.maqet.vm.plugins.module_utils._engine import (
    argument_spec,
    context,
    require_engine,
    run,
)

# Commands that only read state. Everything starting with one of the prefixes, plus
# the named ones; other commands are assumed to change something.
READ_ONLY_PREFIXES = ("query-", "x-query-")
READ_ONLY_COMMANDS = frozenset({
    "qom-get", "qom-list", "qom-list-types", "qom-list-properties",
    "device-list-properties",
})
SCREENDUMP_FORMATS = ("png", "ppm")

QMP_ARGUMENT_SPEC = argument_spec(
    vm={"type": "str", "required": True, "aliases": ["name"]},
    command={"type": "str"},
    arguments={"type": "dict", "default": {}},
    read_only={"type": "bool"},
    keys={"type": "list", "elements": "str", "no_log": False},
    text={"type": "str"},
    screendump={"type": "path", "aliases": ["dest"]},
    screendump_format={"type": "str", "default": "png", "choices": list(SCREENDUMP_FORMATS)},
    timeout={"type": "float", "default": 30.0},
)
QMP_EXCLUSIVE = [("command", "keys", "text", "screendump")]
QMP_REQUIRED_ONE_OF = [("command", "keys", "text", "screendump")]


def is_read_only(command):
    """Whether a QMP command only reads state (decides ``changed``)."""
    return command.startswith(READ_ONLY_PREFIXES) or command in READ_ONLY_COMMANDS


def _sha1(path):
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(65536), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


class QMPRequest:
    """One maqet_qmp task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.ctx = context(module)
        self.check_mode = module.check_mode

    def call(self, method, **params):
        from maqet_engine.engine import lifecycle

        ipc_timeout = self.params["timeout"]
        with self.ctx.open_store(create=False) as store:
            return lifecycle.call(self.ctx.paths, store, self.params["vm"], method,
                                  ipc_timeout=ipc_timeout, **params)

    def require_vm(self):
        """Fail (VMNotFound) before a check-mode prediction about a VM that is not there."""
        with self.ctx.open_store(create=False) as store:
            store.require_vm(self.params["vm"])

    def run(self):
        params = self.params
        if params["command"]:
            return self.command()
        if params["keys"] is not None:
            return self.send("keys", keys=params["keys"])
        if params["text"] is not None:
            return self.send("type", text=params["text"])
        return self.screendump()

    def command(self):
        command = self.params["command"]
        read_only = self.params["read_only"]
        if read_only is None:
            read_only = is_read_only(command)
        result = {"changed": not read_only, "command": command, "read_only": read_only}
        if self.check_mode and not read_only:
            self.require_vm()
            return result  # the command would change something: do not send it
        result["result"] = self.call("qmp", command=command, arguments=self.params["arguments"])
        return result

    def send(self, method, **params):
        if self.check_mode:
            self.require_vm()
            return {"changed": True}
        reply = self.call(method, **params)
        return {"changed": True, "sent": reply.get("sent")}

    def screendump(self):
        dest = os.path.abspath(self.params["screendump"])
        fmt = self.params["screendump_format"]
        directory = os.path.dirname(dest)
        if not os.path.isdir(directory):
            self.module.fail_json(msg="screendump: directory {0} does not exist".format(directory))
        # QEMU writes a temporary file next to dest; it replaces dest only when the
        # picture differs, so an unchanged screen reports no change.
        tmp_name = ".{0}.maqet-{1}.tmp".format(os.path.basename(dest), os.getpid())
        tmp = os.path.join(directory, tmp_name)
        try:
            self.call("screendump", path=tmp, format=fmt)
            new, old = _sha1(tmp), _sha1(dest)
            changed = new != old
            if changed and not self.check_mode:
                self.module.atomic_move(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"changed": changed, "dest": dest, "format": fmt, "checksum": new}


def run_qmp(module):
    """Body of maqet_qmp."""
    require_engine(module)
    request = QMPRequest(module)
    module.exit_json(**run(module, request.run, vm=module.params["vm"]))
