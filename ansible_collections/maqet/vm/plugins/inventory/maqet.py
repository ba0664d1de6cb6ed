# Copyright: maqet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: maqet
short_description: maqet virtual machines as inventory hosts
version_added: 0.1.0
author:
  - maqet developers (@maqet)
description:
  - Lists the VMs of one maqet installation as hosts, read straight from maqet's state
    store (no request to any VM), so large inventories are fast.
  - With O(hypervisors), lists the VMs of several hypervisor hosts instead, asking each
    over SSH (the system C(ssh) client, one connection per hypervisor, all hypervisors at
    the same time) to run C(maqet ls --json). A hypervisor that cannot be reached is a
    warning naming it (an error with O(strict)); the VMs of the others are listed.
  - Lists running VMs by default; O(include_stopped) lists every defined VM.
  - Groups C(maqet) (all listed VMs), C(maqet_<status>) (for example C(maqet_running))
    and C(maqet_tag_<tag>) for each tag of a VM's definition (characters other than
    letters, digits and C(_) become C(_)); with O(hypervisors) also
    C(maqet_hypervisor_<name>) for the VMs of each hypervisor.
  - Sets C(maqet_*) host variables, with O(hypervisors) also C(maqet_hypervisor) (the
    name of the VM's hypervisor). Among them C(maqet_networks), the VM's NICs (C(nic),
    C(type), C(network), C(network_type), C(mac), C(end)), for example to write static
    addresses per named network.
  - For each VM it can reach over SSH (a user-mode network forwards a host port to the
    guest's SSH port, see O(ssh_guest_port)), sets C(ansible_host) and C(ansible_port)
    (the port QEMU really bound, also for a forward whose host port is C(auto)), C(ansible_user)
    (the definition's C(ssh.user), else its first C(cloud_init) user),
    C(ansible_ssh_private_key_file) (C(ssh.private_key), C(~) expanded on the
    controller) and, once the guest printed its host keys on its console (cloud-init
    does), C(ansible_ssh_common_args) with C(-o UserKnownHostsFile=<the keys>
    -o StrictHostKeyChecking=yes). Host key checking is never turned off.
    See O(agent_connection) for reaching guests through their guest agent instead.
  - The config file name must end in C(.maqet.yml) or C(.maqet.yaml).
requirements:
  - Without O(hypervisors), maqet_engine (C(pip install maqet)) in the Python that runs
    Ansible.
  - With O(hypervisors), the C(ssh) client on the controller, and on each hypervisor
    the maqet engine (the P(maqet.vm.hypervisor#role) role installs it); the controller
    needs no engine.
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as a config of this plugin.
    required: true
    type: str
    choices:
      - maqet.vm.maqet
  maqet_home:
    description:
      - Directory of the maqet installation to list, like E(MAQET_HOME). A relative
        path starts from the directory of the inventory file.
      - Not set, and E(MAQET_HOME) not set either, the XDG directories of the user
        running Ansible are used.
      - Not used with O(hypervisors) (each hypervisor has its own C(maqet_home)).
    type: str
    env:
      - name: MAQET_HOME
  include_stopped:
    description: Also list VMs that are not running (defined, stopped, crashed).
    type: bool
    default: false
  ssh_guest_port:
    description:
      - When a user-mode network forwards a host TCP port to this guest port, the host
        gets C(ansible_host) and C(ansible_port) (the host port). A VM whose definition
        has an C(ssh) section uses its C(ssh.port) instead.
      - Without O(hypervisors), C(ansible_host) is the forward's host address
        (C(127.0.0.1) when it listens on every interface), and C(UserKnownHostsFile) is
        the VM's own known_hosts file, which maqet writes from the host keys the guest
        prints on its console.
      - With O(hypervisors), a forward that listens on the hypervisor's loopback
        (C(127.0.0.1), the default of maqet) is reached through the hypervisor;
        C(ansible_ssh_common_args) holds a C(ProxyCommand) (C(ssh -W 127.0.0.1:<port>))
        with the hypervisor's SSH options, and C(HostKeyAlias=[<hypervisor host>]:<port>),
        the name under which the guest's host key must be in the controller's known_hosts
        (guests of different hypervisors may use the same port). C(ansible_host) is the
        hypervisor's O(hypervisors[].host) and C(ansible_port) the forwarded port, so that
        each guest gets SSH connections of its own (Ansible shares a ControlPersist
        connection between hosts with the same address, port and user). The hypervisor's
        sshd must allow TCP forwarding (C(AllowTcpForwarding local) is enough). Add options
        of your own with C(ansible_ssh_extra_args).
      - With O(hypervisors), a forward on every interface (C(0.0.0.0)) gets the
        hypervisor's O(hypervisors[].host) as C(ansible_host), a forward on another
        address gets that address.
      - With O(hypervisors), the guest's host keys (which maqet on the hypervisor read
        from its console) come with the VM list, in the same SSH round trip, and are
        written to O(guest_known_hosts_file) under the name ssh checks (the
        C(HostKeyAlias), or C([address]:port)); C(ansible_ssh_common_args) then names
        that file (C(UserKnownHostsFile), C(StrictHostKeyChecking=yes)).
      - Set to V(0) to never set them.
    type: int
    default: 22
  agent_connection:
    description:
      - VMs with a guest agent channel (their definition sets C(agent) to V(true)) get
        C(ansible_connection=maqet.vm.agent), C(ansible_maqet_vm) (their name) and, with
        O(maqet_home), C(ansible_maqet_home); Ansible reaches them through the guest agent
        (P(maqet.vm.agent#connection)), without a network or SSH.
      - For the local installation only (that connection talks to the runners of the
        controller's own maqet); ignored with a warning with O(hypervisors).
    type: bool
    default: false
  agent_addresses:
    description:
      - Ask the guest agent of each running VM with an agent channel for its network
        addresses (one round trip to the guest per VM, bounded by O(agent_timeout)), as
        C(maqet_guest_addresses) (C(ADDRESS/PREFIX), loopback and link-local left out).
      - A VM that no user-mode forward reaches (O(ssh_guest_port)), for example one on a
        C(tap) or C(bridged) network, gets C(ansible_host) set to the first of them (IPv4
        first), so that SSH reaches it at the address it really has, and
        C(ansible_port) (the guest's SSH port, its C(ssh.port) or else O(ssh_guest_port)),
        C(ansible_user) and C(ansible_ssh_private_key_file) as for a forward. Once the
        guest printed its host keys on its console, C(ansible_ssh_common_args) holds
        C(-o UserKnownHostsFile=<the VM's known_hosts> -o StrictHostKeyChecking=yes
        -o HostKeyAlias=maqet-vm-<name>), so the key is checked against what the VM's
        console printed, not against the address, which the guest reported. With
        O(ssh_guest_port) V(0) only C(ansible_host) is set.
      - The controller must reach that address (routing, or run Ansible where the
        network is).
      - The addresses are what the guest says. Use this only for guests you trust as much
        as the hosts Ansible would then connect to. Not cached. For the local
        installation only.
    type: bool
    default: false
  agent_timeout:
    description:
      - Seconds the guest agent of one VM gets to answer for O(agent_addresses). A VM whose
        agent does not answer in time is left without them, with a warning.
    type: int
    default: 5
  hypervisors:
    description:
      - The hypervisor hosts whose VMs to list. Not set (or empty), the plugin lists the
        local installation (O(maqet_home)) as before.
      - Each entry is a mapping; keys not given come from O(hypervisor_defaults).
      - Hypervisors are asked all at once, each with one C(ssh) connection that runs
        C(maqet ls --json) (as O(hypervisors[].maqet_command), or
        C(<python> -m maqet_engine)) with E(MAQET_HOME) set to
        O(hypervisors[].maqet_home).
      - SSH always runs with C(BatchMode=yes) and host key checking
        (O(hypervisors[].strict_host_key_checking)); your C(~/.ssh/config) applies.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Name of the hypervisor in the inventory (host variable C(maqet_hypervisor),
            group C(maqet_hypervisor_<name>), O(name_template)). Use the name the
            hypervisor has in your inventory, so that C(delegate_to) works with it.
          - Default O(hypervisors[].host).
        type: str
      host:
        description: Address or name to connect to (a C(Host) of C(~/.ssh/config) works).
        type: str
        required: true
      port:
        description: SSH port. Default the client's (22, or C(~/.ssh/config)).
        type: int
      user:
        description: SSH user. Default the client's.
        type: str
      private_key_file:
        description: Private key to log in with (C(ssh -i), with C(IdentitiesOnly=yes)).
        type: path
      known_hosts_file:
        description: known_hosts file with the hypervisor's host key
          (C(UserKnownHostsFile)). Default the client's (C(~/.ssh/known_hosts)).
        type: path
      strict_host_key_checking:
        description:
          - C(StrictHostKeyChecking) of the connection. V(accept-new) trusts a host it
            has never seen and remembers its key. Checking cannot be turned off.
        type: str
        choices:
          - 'yes'
          - accept-new
        default: 'yes'
      ssh_common_args:
        description: More options for C(ssh), as one string (for example
          C(-o ProxyJump=bastion)); split like a shell would.
        type: str
      maqet_command:
        description:
          - Command line (for the hypervisor's shell) that runs the maqet CLI, for
            example C(maqet) when it is on the PATH there. C(--json ls) is appended.
          - Not set, O(hypervisors[].python) C(-m maqet_engine) is run.
        type: str
      python:
        description: Python on the hypervisor that has the maqet engine (used when
          O(hypervisors[].maqet_command) is not set).
        type: str
        default: /opt/maqet/venv/bin/python
      maqet_home:
        description: The maqet home on the hypervisor (E(MAQET_HOME) there). Default the
          XDG directories of the SSH user there.
        type: str
  guest_known_hosts_file:
    description:
      - With O(hypervisors), the known_hosts file on the controller that the plugin
        writes (mode 0600, replaced whole at each listing) with the host keys of the
        guests it lists, under the names ssh looks them up by.
      - Default C(<ANSIBLE_HOME>/maqet/guest_known_hosts/<hash of this inventory
        file's path>), one file per inventory source.
    type: path
  hypervisor_defaults:
    description: Defaults for every entry of O(hypervisors) (the same keys but C(name)
      and C(host)).
    type: dict
    default: {}
  ssh_executable:
    description: The C(ssh) client on the controller.
    type: str
    default: ssh
  ssh_timeout:
    description:
      - Seconds one hypervisor may take to answer, connection included; a slower one
        is unreachable. C(ConnectTimeout) is this too.
    type: int
    default: 30
  ssh_control_persist:
    description:
      - Seconds an SSH connection to a hypervisor stays open after the listing, for the
        next listing to reuse (C(ControlMaster=auto), C(ControlPersist)); the same
        connections carry the C(ProxyCommand) of guests behind the hypervisor. V(0) opens
        a new connection every time and leaves nothing running.
      - The control sockets go to O(ssh_control_path_dir); when that path is too long for a
        socket, connections are not shared.
    type: int
    default: 60
  ssh_control_path_dir:
    description: Directory of the control sockets (created, mode 0700).
    type: path
    default: ~/.ansible/cp
    env:
      - name: ANSIBLE_SSH_CONTROL_PATH_DIR
  max_connections:
    description: How many hypervisors are asked at the same time.
    type: int
    default: 16
  name_template:
    description:
      - With O(hypervisors), a template for the inventory name of each VM, with the
        variables C(hypervisor) (its name), C(name) (the VM's name on it) and
        C(vm) (every C(maqet_*) value without the prefix), for example
        C({{ hypervisor }}-{{ name }}).
      - A sandboxed Jinja2 template with Jinja's own filters (C(replace), C(lower), ...),
        not Ansible's filters or lookups; use O(compose) for those.
      - Not set, a VM's inventory name is its name. When two hypervisors have a VM of the
        same name, the first in O(hypervisors) keeps it and a warning names both (an
        error with O(strict)).
    type: str
"""

EXAMPLES = r"""
# guests.maqet.yml: VMs with an agent channel are reached through it (no network needed)
plugin: maqet.vm.maqet
maqet_home: /srv/maqet
agent_connection: true
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"

---
# demo.maqet.yml: running VMs, grouped, with a few composed variables
plugin: maqet.vm.maqet
maqet_home: /srv/maqet
include_stopped: true
compose:
  ansible_user: "'root'"
  memory_mib: maqet_memory // 1048576 if maqet_memory else none
groups:
  big: (maqet_memory or 0) >= 4294967296
keyed_groups:
  - key: maqet_accel
    prefix: accel
    default_value: none

---
# fleet.maqet.yml: the VMs of three hypervisors, named <hypervisor>-<vm>
plugin: maqet.vm.maqet
include_stopped: true
name_template: "{{ hypervisor }}-{{ name }}"
hypervisor_defaults:
  user: root
  private_key_file: ~/.ssh/fleet
  known_hosts_file: ~/.ssh/fleet_known_hosts
  maqet_home: /srv/maqet
hypervisors:
  - {name: hv1, host: hv1.example.com}
  - {name: hv2, host: hv2.example.com}
  - {name: hv3, host: 192.0.2.30, port: 2222, python: /usr/local/maqet/bin/python}
"""

import hashlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.plugins.loader import connection_loader
from ansible_collections.maqet.vm.plugins.plugin_utils._unsafe import make_unsafe

try:
    from maqet_engine.engine import EngineContext
    from maqet_engine.errors import MaqetError
except ImportError:
    EngineContext = None

    class MaqetError(Exception):
        pass

ACTIVE = ("starting", "running", "paused", "stopping")  # statuses with a QEMU process
AGENT_CONNECTION = "maqet.vm.agent"
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
# Keys of a hypervisor entry (the suboptions of ``hypervisors``) and their defaults.
HYPERVISOR_KEYS = ("name", "host", "port", "user", "private_key_file", "known_hosts_file",
                   "strict_host_key_checking", "ssh_common_args", "maqet_command", "python",
                   "maqet_home")
HYPERVISOR_DEFAULTS = {"strict_host_key_checking": "yes",
                       "python": "/opt/maqet/venv/bin/python"}
HOST_KEY_CHECKING = ("yes", "accept-new")
# The end of what ssh prints when it fails, kept in a warning.
_STDERR_TAIL = 400


class HypervisorError(Exception):
    """A hypervisor could not be listed; the message names it and says why."""


def group_name(text):
    """A valid Ansible group name from a status or tag."""
    return _GROUP_CHARS.sub("_", text)


def bound_forward(ports, guest_port):
    """(listening address, host port) of the first TCP forward to ``guest_port`` that
    has a port now (an ``auto`` one has none while its VM does not run), or None; the
    address as configured (``0.0.0.0`` for every interface)."""
    if not guest_port:
        return None
    for fwd in ports or []:
        if fwd.get("guest") == guest_port and fwd.get("protocol", "tcp") == "tcp" \
                and isinstance(fwd.get("host"), int):
            return fwd.get("host_address") or "127.0.0.1", fwd.get("host")
    return None


def guest_ssh_port(vm, default_port):
    """The guest port Ansible reaches: the VM's own ``ssh.port`` when its definition has
    an ``ssh`` section, else the plugin's ``ssh_guest_port``; 0 (that option) is never."""
    if not default_port:
        return 0
    section = (vm.get("spec") or {}).get("ssh") or {}
    return section.get("port") or default_port


def login_vars(vm):
    """``ansible_user`` and ``ansible_ssh_private_key_file`` of a VM, when known: the
    definition's ``ssh`` section, else its first ``cloud_init`` user (the engine's view
    computes that; a definition read from an older engine gives it here too)."""
    ssh = vm.get("ssh") or {}
    spec = vm.get("spec") or {}
    user = ssh.get("user") or (spec.get("ssh") or {}).get("user")
    if not user:
        users = (spec.get("cloud_init") or {}).get("users") or []
        user = users[0].get("name") if users and isinstance(users[0], dict) else None
    key = ssh.get("private_key") or (spec.get("ssh") or {}).get("private_key")
    found = {}
    if user:
        found["ansible_user"] = user
    if key:
        found["ansible_ssh_private_key_file"] = os.path.expanduser(key)
    return found


def known_hosts_options(path):
    """ssh options that check the guest's host key against ``path`` and nothing else
    (a path with blanks is quoted for ssh, which splits the value on them)."""
    value = '"{0}"'.format(path) if any(c.isspace() for c in path) else path
    return ["-o", "UserKnownHostsFile={0}".format(value), "-o", "StrictHostKeyChecking=yes"]


def known_hosts_name(host, port):
    """How ssh looks a host up in known_hosts: ``host``, or ``[host]:port`` (port not 22)."""
    return host if port == 22 else "[{0}]:{1}".format(host, port)


class GuestKnownHosts:
    """The controller-side known_hosts of guests behind hypervisors: the plugin collects
    each guest's keys (from its hypervisor's VM list) under the name ssh will look up,
    then writes the file once, whole (mode 0600, atomic)."""

    def __init__(self, path):
        self.path = path
        self.lines = {}  # each line once, in order (a dict: no scan per key)

    def add(self, name, keys):
        for key in keys:
            self.lines.setdefault("{0} {1}".format(name, key), None)

    def write(self):
        if not self.lines and not os.path.exists(self.path):
            return
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".known_hosts.", dir=directory)
        try:
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write("".join(line + "\n" for line in self.lines))
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


def ssh_forward(ports, guest_port):
    """(address, host port) of the first TCP forward to ``guest_port``, or None; a
    forward on every interface is reached at ``127.0.0.1``."""
    forward = bound_forward(ports, guest_port)
    if forward is None:
        return None
    address, port = forward
    return ("127.0.0.1" if address == "0.0.0.0" else address), port


def vm_from_view(view):
    """One VM as plain, JSON-able data (cacheable), from the engine's view of it (what
    ``engine.list_vms`` returns and ``maqet ls --json`` prints)."""
    spec = view.get("spec") or {}
    return {
        "name": view["name"],
        "id": view.get("id"),
        "status": view["status"],
        "runner_pid": view.get("runner_pid"),
        "qemu_pid": view.get("qemu_pid"),
        "accel": view.get("accel"),
        "tags": list(view.get("tags") or []),
        "cpu": spec.get("cpu"),
        "memory": spec.get("memory"),
        "machine": spec.get("machine"),
        "spec_hash": view.get("spec_hash"),
        "restart_required": view.get("restart_required", False),
        "ports": view.get("ports") or [],
        "networks": [{"network": nic["network"], "type": nic["type"],
                      "network_type": nic["network_type"], "mac": nic["mac"],
                      "nic": nic["nic"], "end": nic["end"]}
                     for nic in view.get("networks") or []],
        "ssh": view.get("ssh") or {},
        "known_hosts": view.get("known_hosts"),
        "spec": spec,
    }


def read_vms(home):
    """Every VM of the local installation as plain, JSON-able data (cacheable).

    One read of the state store through the engine's ``list_vms`` (no request to any
    VM): the status is the engine's one reading of the record, the runner's lock and
    QEMU's identity, so a VM whose runner and QEMU are gone shows as ``crashed`` here
    exactly as in ``maqet status`` and ``maqet_vm_info`` (the store is not modified).
    """
    from maqet_engine import engine

    ctx = EngineContext.for_home(home, check_mode=True)
    return [vm_from_view(view) for view in engine.list_vms(ctx).data]


# --- hypervisors over SSH -------------------------------------------------------------------

def hypervisor_config(entry, defaults=None):
    """One entry of ``hypervisors`` merged over ``hypervisor_defaults`` and checked: a
    dict with every key of HYPERVISOR_KEYS. Raises ``AnsibleParserError``."""
    if not isinstance(entry, dict):
        raise AnsibleParserError("maqet inventory: each item of hypervisors is a mapping with "
                                 "at least host, not {0!r}".format(entry))
    config = dict(HYPERVISOR_DEFAULTS)
    for source, what in ((defaults or {}, "hypervisor_defaults"), (entry, "hypervisors")):
        unknown = sorted(set(source) - set(HYPERVISOR_KEYS))
        if unknown:
            raise AnsibleParserError("maqet inventory: unknown key(s) {0} in {1}; known: {2}"
                                     .format(", ".join(unknown), what,
                                             ", ".join(HYPERVISOR_KEYS)))
        config.update((key, value) for key, value in source.items() if value is not None)
    for key in ("name", "host"):
        if key in (defaults or {}):
            raise AnsibleParserError("maqet inventory: {0} cannot be in hypervisor_defaults"
                                     .format(key))
    if not config.get("host"):
        raise AnsibleParserError("maqet inventory: a hypervisor without host: {0!r}"
                                 .format(entry))
    config["host"] = str(config["host"])
    config.setdefault("name", config["host"])
    config["name"] = str(config["name"])
    if config["strict_host_key_checking"] not in HOST_KEY_CHECKING:
        raise AnsibleParserError(
            "maqet inventory: hypervisor {0}: strict_host_key_checking must be one of {1}, "
            "not {2!r} (host key checking cannot be turned off)".format(
                config["name"], ", ".join(HOST_KEY_CHECKING), config["strict_host_key_checking"]))
    if config.get("port") is not None:
        try:
            config["port"] = int(config["port"])
        except (TypeError, ValueError):
            raise AnsibleParserError("maqet inventory: hypervisor {0}: port {1!r} is not a "
                                     "number".format(config["name"], config["port"])) from None
    for key in ("private_key_file", "known_hosts_file"):
        if config.get(key):
            config[key] = os.path.expanduser(str(config[key]))
    for key in HYPERVISOR_KEYS:
        config.setdefault(key, None)
    config["multiplex"] = []
    return config


def ssh_options(hv):
    """The ssh client options that reach hypervisor ``hv`` (without the executable, the
    destination and a command): batch mode and host key checking first (ssh keeps the
    first value of an option, so ``ssh_common_args`` cannot turn them off), connection
    sharing (``hv["multiplex"]``) last, so that ``ssh_common_args`` may override it."""
    options = ["-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking={0}".format(hv["strict_host_key_checking"])]
    if hv.get("known_hosts_file"):
        options += ["-o", "UserKnownHostsFile={0}".format(hv["known_hosts_file"])]
    if hv.get("private_key_file"):
        options += ["-i", hv["private_key_file"], "-o", "IdentitiesOnly=yes"]
    if hv.get("port"):
        options += ["-p", str(hv["port"])]
    if hv.get("user"):
        options += ["-l", hv["user"]]
    if hv.get("ssh_common_args"):
        options += shlex.split(hv["ssh_common_args"])
    options += hv.get("multiplex") or []
    return options


# ssh names a new control socket <ControlPath>.<16 random characters> first; a Unix socket
# path has at most 107 bytes.
_SOCKET_PATH_MAX = 107 - 17


def multiplex_options(hv, persist, directory):
    """ssh options that keep one connection to hypervisor ``hv`` open for ``persist``
    seconds under ``directory`` and let later ssh commands reuse it; [] when ``persist``
    is 0 or the socket path would be too long."""
    if not persist or not directory:
        return []
    directory = os.path.expanduser(directory)
    key = "{0}|{1}|{2}".format(hv["host"], hv.get("port") or "", hv.get("user") or "")
    path = os.path.join(directory, "maqet-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12])
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        return []
    return ["-o", "ControlMaster=auto", "-o", "ControlPersist={0}s".format(persist),
            "-o", "ControlPath={0}".format(path)]


def remote_command(hv):
    """The command line the hypervisor's shell runs: ``maqet --json ls`` with its home."""
    if hv.get("maqet_command"):
        command = hv["maqet_command"]
    else:
        command = "{0} -m maqet_engine".format(shlex.quote(hv["python"]))
    if hv.get("maqet_home"):
        command = "MAQET_HOME={0} {1}".format(shlex.quote(hv["maqet_home"]), command)
    return command + " --json ls"


def ssh_argv(hv, executable="ssh", timeout=30):
    """The whole ``ssh`` command that lists hypervisor ``hv``'s VMs."""
    return [executable, "-o", "ConnectTimeout={0}".format(timeout), *ssh_options(hv),
            hv["host"], remote_command(hv)]


def list_hypervisor(hv, executable="ssh", timeout=30):
    """The engine's views of every VM of hypervisor ``hv`` (one SSH round trip).
    Raises ``HypervisorError`` when it cannot be reached or maqet fails there."""
    where = "hypervisor {0} ({1})".format(hv["name"], hv["host"])
    argv = ssh_argv(hv, executable, timeout)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HypervisorError("{0} did not answer within {1} s (ssh_timeout)"
                              .format(where, timeout)) from None
    except OSError as err:
        raise HypervisorError("{0}: cannot run {1}: {2}".format(where, executable, err)) from None
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    data = None
    try:
        data = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        pass
    if proc.returncode == 0 and isinstance(data, list):
        return data
    if proc.returncode == 255:
        raise HypervisorError("{0} is unreachable over SSH: {1}".format(
            where, stderr or "ssh exited with 255"))
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        raise HypervisorError("{0}: maqet failed: {1}".format(
            where, data["error"].get("message") or data["error"]))
    if proc.returncode == 127 or "No module named maqet_engine" in stderr:
        raise HypervisorError(
            "{0}: the maqet engine was not found there ({1}): install it (the "
            "maqet.vm.hypervisor role does) or set python / maqet_command; {2}".format(
                where, hv.get("maqet_command") or hv["python"], stderr))
    raise HypervisorError("{0}: '{1}' exited with {2}, not a VM list: {3}".format(
        where, remote_command(hv), proc.returncode, stderr or stdout[-_STDERR_TAIL:]))


def proxy_command(hv, address, port, executable="ssh"):
    """``ssh ... -W <address>:<port> <hypervisor>``: the ProxyCommand that reaches a
    guest's forward on the hypervisor's loopback, with the hypervisor's own SSH options.
    ssh runs it with /bin/sh and expands ``%`` tokens: words are shell-quoted and ``%`` is
    doubled."""
    words = [executable, *ssh_options(hv), "-W", "{0}:{1}".format(address, port), hv["host"]]
    return " ".join(shlex.quote(word.replace("%", "%%")) for word in words)


def host_key_alias(hv, port):
    """Under which name the controller's known_hosts holds the key of a guest reached
    through hypervisor ``hv`` at forwarded ``port``: ``[<hypervisor host>]:<port>``."""
    return "[{0}]:{1}".format(hv["host"], port)


def _is_loopback(address):
    return address == "localhost" or address.startswith("127.") or address == "::1"


def has_agent(vm):
    """Whether the VM's definition has the guest agent channel (``agent: true``)."""
    return bool((vm.get("spec") or {}).get("agent"))


def agent_vars(vm, home=None):
    """The variables that make Ansible reach ``vm`` through its guest agent (the
    maqet.vm.agent connection), or {} for a VM without an agent channel."""
    if not has_agent(vm):
        return {}
    variables = {"ansible_connection": AGENT_CONNECTION, "ansible_maqet_vm": vm["name"]}
    if home:
        variables["ansible_maqet_home"] = home
    return variables


def guest_addresses(interfaces):
    """The addresses (``ADDRESS/PREFIX``) of a guest's interfaces as the engine's
    ``guest_info`` reports them, IPv4 first, without loopback and link-local ones."""
    found = []
    for family in ("ipv4", "ipv6"):
        for iface in interfaces or []:
            for text in iface.get("addresses") or []:
                address = text.split("/", 1)[0]
                if (":" in address) != (family == "ipv6"):
                    continue
                try:
                    ip = ipaddress.ip_address(address.split("%", 1)[0])
                except ValueError:
                    continue
                if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                    found.append(text)
    return found


def address_vars(vm, address, guest_port):
    """The connection variables of a local VM reached at ``address``, an address of the
    guest's own that its agent reported (no user-mode forward reaches it): that address
    and the guest's SSH port, the login of :func:`login_vars`, and, once the guest printed
    its host keys, ``ansible_ssh_common_args`` that check them against the VM's
    known_hosts under its host key alias (``HostKeyAlias=maqet-vm-NAME``): the key must be
    the one the VM's console printed, whatever address the guest claims. ``guest_port``
    0 (the plugin's ``ssh_guest_port``): ``ansible_host`` only."""
    found = {"ansible_host": address}
    port = guest_ssh_port(vm, guest_port)
    if not port:
        return found
    found["ansible_port"] = port
    found.update(login_vars(vm))
    alias = (vm.get("ssh") or {}).get("host_key_alias")
    if alias and vm.get("known_hosts"):
        found["ansible_ssh_common_args"] = shlex.join(
            known_hosts_options(vm["known_hosts"]) + ["-o", "HostKeyAlias={0}".format(alias)])
    return found


def connection_vars(vm, guest_port, hypervisor=None, ssh_executable="ssh", known_hosts=None):
    """The connection variables (``ansible_*``) of one VM: the one place that decides
    how Ansible reaches a guest. ``guest_port``: the plugin's ``ssh_guest_port`` (a VM's
    own ``ssh.port`` wins). ``hypervisor``: the config of the VM's hypervisor (None for
    the local installation). ``known_hosts``: the :class:`GuestKnownHosts` that collects
    the keys of guests behind hypervisors (the local installation's VMs have a
    known_hosts file of their own).

    A guest behind a hypervisor's loopback gets the *hypervisor's* host as
    ``ansible_host`` (the ProxyCommand names the real target): Ansible keys its SSH
    ControlPersist sockets by host, port and user, so two guests on two hypervisors with
    the same forwarded port would otherwise share one connection, and commands would
    reach the wrong guest. Its host key is checked under ``[<hypervisor host>]:<port>``
    (``HostKeyAlias``), the name its keys are collected under."""
    guest_port = guest_ssh_port(vm, guest_port)
    if hypervisor is None:
        forward = ssh_forward(vm.get("ports"), guest_port)
        if not forward:
            return {}
        found = {"ansible_host": forward[0], "ansible_port": forward[1], **login_vars(vm)}
        if vm.get("known_hosts"):
            found["ansible_ssh_common_args"] = shlex.join(known_hosts_options(vm["known_hosts"]))
        return found
    forward = bound_forward(vm.get("ports"), guest_port)
    if not forward:
        return {}
    address, port = forward
    common = []
    if address == "0.0.0.0":
        host = hypervisor["host"]
        name = known_hosts_name(host, port)
    elif not _is_loopback(address):
        host = address
        name = known_hosts_name(host, port)
    else:
        host = hypervisor["host"]
        name = host_key_alias(hypervisor, port)
        proxy = proxy_command(hypervisor, address, port, ssh_executable)
        common += ["-o", "ProxyCommand={0}".format(proxy), "-o", "HostKeyAlias={0}".format(name)]
    keys = (vm.get("ssh") or {}).get("host_keys") or []
    if keys and known_hosts is not None:
        known_hosts.add(name, keys)
        common += known_hosts_options(known_hosts.path)
    found = {"ansible_host": host, "ansible_port": port, **login_vars(vm)}
    if common:
        found["ansible_ssh_common_args"] = shlex.join(common)
    return found


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "maqet.vm.maqet"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".maqet.yml", ".maqet.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        self._path = path
        self._name_template = None
        hypervisors = self.get_option("hypervisors")
        if hypervisors:
            defaults = self.get_option("hypervisor_defaults") or {}
            configs = [hypervisor_config(entry, defaults) for entry in hypervisors]
            self._share_connections(configs)
            names = [hv["name"] for hv in configs]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise AnsibleParserError("maqet inventory {0}: hypervisor name(s) {1} given "
                                         "twice".format(path, ", ".join(twice)))
            for option in ("agent_connection", "agent_addresses"):
                if self.get_option(option):
                    self.display.warning("maqet inventory {0}: {1} works for the local "
                                         "installation only (without hypervisors); "
                                         "ignored".format(path, option))
            self._parse_hypervisors(configs, cache)
            return
        home = self._local_home(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        vms = None
        if use_cache:
            try:
                vms = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if vms is None:
            try:
                vms = read_vms(home)
            except MaqetError as err:
                raise AnsibleParserError("maqet inventory {0}: {1}".format(path, err)) from err
        if update_cache:
            self._cache[cache_key] = vms
        self._home = home
        self._agent_preloaded = False
        self._populate(vms)

    def _local_home(self, path):
        if EngineContext is None:
            raise AnsibleError(
                "the maqet inventory needs the maqet engine (Python package maqet_engine) in "
                "the Python that runs Ansible: pip install maqet (or list hypervisors over "
                "SSH with the hypervisors option)")
        home = self.get_option("maqet_home")
        if home:
            home = os.path.expanduser(home)
            if not os.path.isabs(home):
                home = os.path.join(os.path.dirname(os.path.abspath(path)), home)
            if not os.path.isdir(home):
                message = ("maqet inventory {0}: maqet_home {1} does not exist, so it lists no "
                           "VMs; check the path (or create VMs there first)".format(path, home))
                if self.get_option("strict"):
                    raise AnsibleParserError(message)
                self.display.warning(message)
        return home

    # --- several hypervisors -------------------------------------------------------------
    def _parse_hypervisors(self, configs, cache):
        cache_key = self.get_cache_key(self._path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        listed = None
        if use_cache:
            try:
                listed = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if listed is None or sorted(listed) != sorted(hv["name"] for hv in configs):
            listed, failures = self._list_all(configs)
            for message in failures:
                if self.get_option("strict"):
                    raise AnsibleParserError("maqet inventory {0}: {1}".format(self._path,
                                                                               message))
                self.display.warning("maqet inventory {0}: {1}; its VMs are not listed"
                                     .format(self._path, message))
            if failures:
                update_cache = False  # a host that was down is asked again next time
        if update_cache:
            self._cache[cache_key] = listed
        self.inventory.add_group("maqet")
        owners = {}  # inventory name -> hypervisor that has it
        known_hosts = GuestKnownHosts(self._guest_known_hosts_file())
        for hv in configs:
            hv_group = self.inventory.add_group(
                make_unsafe(group_name("maqet_hypervisor_" + hv["name"])))
            for vm in listed.get(hv["name"], []):
                self._add_vm(vm, hv, hv_group, owners, known_hosts)
        try:
            known_hosts.write()
        except OSError as err:
            raise AnsibleParserError("maqet inventory {0}: cannot write the guests' "
                                     "known_hosts {1}: {2}".format(self._path,
                                                                   known_hosts.path, err)) \
                from err

    def _guest_known_hosts_file(self):
        path = self.get_option("guest_known_hosts_file")
        if path:
            return os.path.abspath(os.path.expanduser(path))
        from ansible import constants

        home = constants.config.get_config_value("ANSIBLE_HOME")
        key = hashlib.sha1(os.path.abspath(self._path).encode("utf-8")).hexdigest()[:12]
        return os.path.join(os.path.expanduser(home), "maqet", "guest_known_hosts", key)

    def _share_connections(self, configs):
        persist = self.get_option("ssh_control_persist")
        directory = self.get_option("ssh_control_path_dir")
        if not persist or not directory:
            return
        try:
            os.makedirs(os.path.expanduser(directory), mode=0o700, exist_ok=True)
        except OSError as err:
            self.display.warning("maqet inventory {0}: cannot create ssh_control_path_dir {1}: "
                                 "{2}; SSH connections are not shared".format(
                                     self._path, directory, err))
            return
        for hv in configs:
            hv["multiplex"] = multiplex_options(hv, persist, directory)

    def _list_all(self, configs):
        """{hypervisor name: [vm, ...]} of every hypervisor that answered, and one message
        for each that did not. All are asked at once, one thread each."""
        executable = self.get_option("ssh_executable")
        timeout = self.get_option("ssh_timeout")
        workers = max(1, min(self.get_option("max_connections"), len(configs)))
        listed, failures = {}, []

        def one(hv):
            return [vm_from_view(view) for view in list_hypervisor(hv, executable, timeout)]

        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(hv, pool.submit(one, hv)) for hv in configs]
            for hv, future in futures:
                try:
                    listed[hv["name"]] = future.result()
                except HypervisorError as err:
                    failures.append(str(err))
                except (KeyError, TypeError, ValueError) as err:
                    failures.append("hypervisor {0} ({1}): unexpected answer of maqet ls: "
                                    "{2!r}".format(hv["name"], hv["host"], err))
        return listed, failures

    def _inventory_name(self, vm, hv):
        template = self.get_option("name_template")
        if not template:
            return vm["name"]
        if self._name_template is None:
            # Sandboxed Jinja2, compiled once: Ansible's templar costs ~1 ms per host, the
            # whole budget of a large inventory, and a name needs no lookups or filters
            # beyond Jinja's own.
            try:
                self._name_template = SandboxedEnvironment(
                    undefined=StrictUndefined, autoescape=False).from_string(template)
            except TemplateError as err:
                raise AnsibleParserError("maqet inventory {0}: name_template {1!r}: {2}".format(
                    self._path, template, err)) from err
        try:
            name = self._name_template.render(hypervisor=hv["name"], name=vm["name"], vm=vm)
        except (TemplateError, ValueError, TypeError) as err:
            raise AnsibleParserError("maqet inventory {0}: name_template {1!r}: {2}".format(
                self._path, template, err)) from err
        name = str(name).strip()
        if not name or "{{" in name:
            raise AnsibleParserError("maqet inventory {0}: name_template {1!r} gave {2!r} for "
                                     "VM {3} of {4}".format(self._path, template, name,
                                                            vm["name"], hv["name"]))
        return name

    def _add_vm(self, vm, hv, hv_group, owners, known_hosts):
        if not self.get_option("include_stopped") and vm["status"] not in ACTIVE:
            return
        name = self._inventory_name(vm, hv)
        if name in owners:
            message = ("maqet inventory {0}: hypervisors {1} and {2} both have a VM named {3}; "
                       "listing the one of {1} only. Set name_template (for example "
                       "'{{{{ hypervisor }}}}-{{{{ name }}}}') to list both".format(
                           self._path, owners[name], hv["name"], name))
            if self.get_option("strict"):
                raise AnsibleParserError(message)
            self.display.warning(message)
            return
        owners[name] = hv["name"]
        hostvars = dict(vm)
        hostvars["hypervisor"] = hv["name"]
        self._add_host(name, hostvars, connection_vars(
            vm, self.get_option("ssh_guest_port"), hv, self.get_option("ssh_executable"),
            known_hosts), extra_groups=(hv_group,))

    # --- one host ----------------------------------------------------------------------
    def _populate(self, vms):
        include_stopped = self.get_option("include_stopped")
        guest_port = self.get_option("ssh_guest_port")
        agent_connection = self.get_option("agent_connection")
        # One engine context for every VM whose agent is asked for its addresses.
        agents = EngineContext.for_home(self._home, check_mode=True) \
            if self.get_option("agent_addresses") else None
        self.inventory.add_group("maqet")
        for vm in vms:
            if not include_stopped and vm["status"] not in ACTIVE:
                continue
            vm = dict(vm)
            connection = connection_vars(vm, guest_port)
            if agents is not None and has_agent(vm) and vm["status"] == "running":
                addresses = self._guest_addresses(agents, vm)
                if addresses is not None:
                    vm["guest_addresses"] = addresses
                    if addresses and "ansible_host" not in connection:
                        connection.update(address_vars(
                            vm, addresses[0].split("/", 1)[0], guest_port))
            if agent_connection:
                connection.update(agent_vars(vm, self._home))
                if "ansible_connection" in connection:
                    self._preload_agent_connection()
            self._add_host(vm["name"], vm, connection)

    def _preload_agent_connection(self):
        """Load the maqet.vm.agent connection plugin here, in Ansible's main process. Its
        task workers are forked from this process: they find the plugin (and the engine's
        guest calls) loaded and its options known. Ansible does this for its own
        connection plugins, not for a collection's; each task would otherwise load it
        again (~25 ms a task here)."""
        if self._agent_preloaded:
            return
        self._agent_preloaded = True
        try:
            connection_loader.get(AGENT_CONNECTION, class_only=True)
        except Exception as err:  # noqa: BLE001 - only a speed-up: the task loads it anyway
            self.display.vvv("maqet inventory: could not preload {0}: {1}".format(
                AGENT_CONNECTION, err))

    def _guest_addresses(self, ctx, vm):
        """The guest's addresses as its agent reports them now (one agent command); None
        (and a warning) when it does not answer within agent_timeout."""
        from maqet_engine import engine

        try:
            interfaces = engine.guest_interfaces(
                ctx, vm["name"], agent_timeout=max(1, self.get_option("agent_timeout"))).data
        except MaqetError as err:
            self.display.warning("maqet inventory {0}: no guest addresses for {1}: {2}".format(
                self._path, vm["name"], err))
            return None
        return guest_addresses(interfaces)

    def _add_host(self, name, vm, connection, extra_groups=()):
        """Add one VM: groups, ``maqet_*`` variables (from ``vm``), the connection
        variables, then the constructed options."""
        strict = self.get_option("strict")
        host = self.inventory.add_host(make_unsafe(name), group="maqet")
        status_group = self.inventory.add_group(group_name("maqet_" + vm["status"]))
        self.inventory.add_child(status_group, host)
        for tag in vm["tags"]:
            tag_group = self.inventory.add_group(make_unsafe(group_name("maqet_tag_" + tag)))
            self.inventory.add_child(tag_group, host)
        for group in extra_groups:
            self.inventory.add_child(group, host)
        hostvars = {"maqet_" + key: value for key, value in vm.items()}
        hostvars.update(connection)
        for key, value in hostvars.items():
            self.inventory.set_variable(host, key, make_unsafe(value))
        hostvars = self.inventory.get_host(host).get_vars()
        self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host,
                                          strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host,
                                       strict=strict)
