"""The definition schema, declared once.

Each key is a :class:`Field`; the generic checker (``check.py``), the "did you mean"
messages, the defaults and ``docs/configuration.md`` (``docgen.py``) all read these
declarations. Storage types declare their own fields on their class (``storage.py``)
so that adding a type is adding one class.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from maqet_engine import constants as C


class Kind(enum.Enum):
    """What a value must be; the text is the type column of the docs."""

    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    ENUM = "choice"
    SIZE = "size"
    PATH = "path"
    STR_LIST = "list of strings"
    ENTRIES = "list of mappings"
    MAC = "MAC address"
    IPV4 = "IPv4 address"
    MAPPING = "mapping"
    DATA = "mapping or text"
    BOOL_OR_STR = "boolean or string"


class Base(enum.Enum):
    """What a relative path is relative to."""

    DEFINITION = "the directory of the (last) definition file"
    VM_DIR = "the VM's own directory"


class Exists(enum.Enum):
    """What a path must name at define time."""

    FILE = "file"
    DIR = "directory"


@dataclass(frozen=True)
class Field:
    """One key of a mapping in the definition.

    ``default`` is the normalized value used when the key is absent or null;
    ``default_doc`` replaces it in the docs when the default is computed.
    ``requires`` names sibling keys that must be set when this one is.
    """

    key: str
    kind: Kind
    doc: str
    default: Any = None
    default_doc: str = ""
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    bare_unit: int = 1
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    what: str = ""
    base: Base | None = None
    exists: Exists | None = None
    requires: tuple[str, ...] = ()
    entries: str = ""


@dataclass(frozen=True)
class Section:
    """A mapping of the definition: its place, prose and keys."""

    title: str
    where: str
    doc: str
    fields: tuple[Field, ...]

    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)


def _paths_doc(base: Base) -> str:
    return f"relative to {base.value}"


TOP = Section(
    title="Top-level keys",
    where="",
    doc="The definition is one mapping. Every key but `name` is optional.",
    fields=(
        Field("name", Kind.STR, "Name of the VM, unique on this host (or give `--name`).",
              required=True, pattern=C.VM_NAME_RE, pattern_help=C.VM_NAME_HELP,
              what="VM name"),
        Field("binary", Kind.STR,
              "QEMU system emulator: a command looked up on `PATH` when the VM starts, or "
              "a path (" + _paths_doc(Base.DEFINITION) + ") when it contains `/`.",
              default=C.DEFAULT_BINARY),
        Field("machine", Kind.STR, "Machine type and options, passed to `-machine` "
              "(e.g. `q35`). Unset: QEMU's default machine.",
              pattern=C.QEMU_OPTION_RE, pattern_help=C.QEMU_OPTION_HELP,
              what="machine option string"),
        Field("accel", Kind.ENUM, "Accelerator. `auto` uses KVM when `/dev/kvm` is usable "
              "and the CPU has VT-x/AMD-V, TCG otherwise; it is resolved at each start.",
              default=C.DEFAULT_ACCEL, choices=C.ACCEL_CHOICES),
        Field("memory", Kind.SIZE, "Guest RAM, passed to `-m`. A bare number is MiB, as "
              "with QEMU's `-m`. Unset: QEMU's default.",
              minimum=C.MIN_MEMORY_BYTES, maximum=C.MAX_MEMORY_BYTES,
              bare_unit=C.MEMORY_BARE_UNIT),
        Field("cpu", Kind.INT, "Number of vCPUs, passed to `-smp`. Unset: QEMU's default.",
              minimum=1, maximum=C.MAX_CPUS),
        Field("cpu_model", Kind.STR, "CPU model, passed to `-cpu` (e.g. `host` with KVM). "
              "Unset: QEMU's default.", pattern=C.QEMU_OPTION_RE,
              pattern_help=C.QEMU_OPTION_HELP, what="CPU option string"),
        Field("storage", Kind.ENTRIES, "Disks, CD-ROMs and shared host directories, in "
              "device order.", default=[], entries="storage"),
        Field("network", Kind.ENTRIES, "Network interfaces, in order; their netdev ids are "
              "`net0`, `net1`, ... by position. None given: the VM has no NIC.",
              default=[], entries="network"),
        Field("kernel", Kind.PATH, "Linux kernel to boot directly (`-kernel`), "
              + _paths_doc(Base.DEFINITION) + "; must exist.",
              base=Base.DEFINITION, exists=Exists.FILE),
        Field("initrd", Kind.PATH, "Initial ramdisk (`-initrd`), "
              + _paths_doc(Base.DEFINITION) + "; must exist. Needs `kernel`.",
              base=Base.DEFINITION, exists=Exists.FILE, requires=("kernel",)),
        Field("append", Kind.STR, "Kernel command line (`-append`). Needs `kernel`.",
              requires=("kernel",)),
        Field("display", Kind.STR, "Display backend, passed to `-display`. The runner is "
              "detached and headless, hence `none`.", default=C.DEFAULT_DISPLAY,
              pattern=C.QEMU_OPTION_RE, pattern_help=C.QEMU_OPTION_HELP,
              what="display option string"),
        Field("vga", Kind.ENUM, "Graphics card (`-vga`). Screenshots need one, hence `std`.",
              default=C.DEFAULT_VGA, choices=C.VGA_CHOICES),
        Field("arguments", Kind.STR_LIST, "Extra QEMU arguments, appended verbatim after "
              "everything maqet generates (one list item per argv word).", default=[]),
        Field("tags", Kind.STR_LIST, "Free labels (e.g. for inventory groups); stored "
              "sorted and without duplicates.", default=[],
              pattern=C.TAG_RE, pattern_help=C.TAG_HELP, what="tag"),
        Field("cloud_init", Kind.MAPPING, "A cloud-init NoCloud seed for the guest: maqet "
              "writes it at each start and attaches it as a read-only virtio disk labelled "
              "`cidata`. Unset: no seed.", entries="cloud_init"),
        Field("agent", Kind.BOOL, "A channel to the QEMU guest agent (qemu-ga) in the guest: "
              "a virtio-serial port named `org.qemu.guest_agent.0` whose host end the runner "
              "owns. `maqet exec`, `maqet cp`, `maqet guest-info` and the `maqet.vm.agent` "
              "connection plugin go through it; the guest must run qemu-ga on that port. See "
              "docs/guest-agent.md.", default=False),
        Field("ssh", Kind.MAPPING, "How Ansible and `maqet wait --ssh` reach the guest over "
              "SSH (user, key, guest port). Unset: port 22, and the first `cloud_init` user.",
              entries="ssh"),
    ),
)

SSH = Section(
    title="ssh",
    where="ssh",
    doc="How to reach the guest over SSH, through a `user` network's forward to `port`, "
        "or at the address its guest agent reports (the inventory's `agent_addresses`, "
        "for a VM on a `bridged` or `tap` network): the inventory plugin sets "
        "`ansible_user`, `ansible_ssh_private_key_file` and the known_hosts maqet writes "
        "from the guest's console. Nothing secret is stored: `private_key` only names a "
        "file. See docs/guests.md and docs/networks.md.",
    fields=(
        Field("user", Kind.STR, "User to log in as.",
              default_doc="the first user of `cloud_init.users`, if any",
              pattern=C.USER_NAME_RE, pattern_help=C.USER_NAME_HELP, what="user name"),
        Field("private_key", Kind.STR, "Private key file to log in with, on the machine that "
              "runs Ansible or ssh (which may not be the VM's host): kept as written, `~` is "
              "expanded there."),
        Field("port", Kind.INT, "The guest's SSH port; a `user` network must forward a host "
              "port to it (or the guest is reached at its own address, see `agent_addresses` "
              "in docs/networks.md).", default=C.SSH_DEFAULT_PORT, minimum=C.PORT_MIN,
              maximum=C.PORT_MAX),
    ),
)

_KEY_HELP = "one OpenSSH public key line (as in a `.pub` file)"

# The cloud_init section is checked and normalized by maqet_engine.cloudinit.normalize
# (strict: its own messages); these declarations document its keys (a unit test keeps
# them equal to that function's).
CLOUD_INIT = Section(
    title="cloud_init",
    where="cloud_init",
    doc="What cloud-init in the guest gets from its NoCloud seed. Shortcuts (`hostname`, "
        "`users`, `ssh_authorized_keys`) and explicit data (`user_data`, `meta_data`) may "
        "not set the same cloud-init key. maqet sets meta-data's `instance-id` from the "
        "seed's content: any change makes cloud-init run again at the next start. "
        "See docs/guests.md.",
    fields=(
        Field("hostname", Kind.STR, "Host name of the guest (meta-data `local-hostname`, "
              "and #cloud-config `hostname` when `user_data` is a mapping).",
              default_doc="the VM's `name` when it is a valid host name and neither "
              "`user_data` (`hostname`, `fqdn`) nor `meta_data` (`local-hostname`) sets one",
              pattern=C.HOSTNAME_RE, pattern_help=C.HOSTNAME_HELP, what="host name"),
        Field("users", Kind.ENTRIES, "Accounts to create (#cloud-config `users`). They "
              "replace the image's default user unless `ssh_authorized_keys` (that user's "
              "keys) is given too. A user named `root` also sets `disable_root: false`.",
              default=[], entries="users"),
        Field("ssh_authorized_keys", Kind.STR_LIST, "SSH public keys of the image's "
              "default user.", default=[], pattern_help=_KEY_HELP),
        Field("user_data", Kind.DATA, "More #cloud-config keys as a mapping, merged with "
              "the shortcuts; or the whole user-data as text (a `#cloud-config` document, a "
              "`#!` script, MIME), used verbatim: then only `hostname` may be given besides.",
              default_doc="`{}`"),
        Field("meta_data", Kind.MAPPING, "More meta-data keys (not `instance-id`: maqet "
              "derives it from the seed's content).", default_doc="`{}`"),
        Field("network_config", Kind.DATA, "Network configuration version 1 or 2 (a "
              "mapping, or YAML text). Unset: no network-config file (cloud-init runs DHCP on "
              "the first NIC)."),
    ),
)

CLOUD_INIT_USER = Section(
    title="users",
    where="cloud_init.users[]",
    doc="One account; stored with its keys in canonical form.",
    fields=(
        Field("name", Kind.STR, "Account name (not `default`: cloud-init's name for the "
              "image's own user).", required=True, pattern=C.USER_NAME_RE,
              pattern_help=C.USER_NAME_HELP, what="user name"),
        Field("ssh_authorized_keys", Kind.STR_LIST, "SSH public keys that may log in as "
              "this user.", default=[], pattern_help=_KEY_HELP),
        Field("sudo", Kind.BOOL_OR_STR, "`true` grants `" + C.CLOUD_INIT_SUDO_ALL + "`; "
              "a string is one sudoers rule; `false` or unset: no sudo rule (never for "
              "`root`)."),
    ),
)

STORAGE_COMMON = (
    Field("name", Kind.STR, "Name of the entry, unique within the VM; also the QEMU "
          "node-name and device id.", required=True, pattern=C.STORAGE_NAME_RE,
          pattern_help=C.STORAGE_NAME_HELP, what="storage name"),
    Field("type", Kind.ENUM, "Kind of storage; decides which other keys apply.",
          required=True),
)

NETWORK_COMMON = (
    Field("type", Kind.ENUM, "Kind of host-side network backend.", required=True,
          choices=C.NETWORK_TYPES),
    Field("model", Kind.STR, "Guest NIC device model.", default=C.DEFAULT_NIC_MODEL,
          pattern=C.NIC_MODEL_RE, pattern_help=C.NIC_MODEL_HELP, what="NIC model"),
    Field("mac", Kind.MAC, "MAC address of the NIC, `xx:xx:xx:xx:xx:xx`; stored in "
          "lower case. Unset: QEMU picks one."),
)

NETWORK_TYPES: Mapping[str, Section] = MappingProxyType({
    "user": Section(
        title="network, type `user`",
        where="network[]",
        doc="QEMU's user-mode (slirp) networking: no privileges needed; the guest reaches "
            "out through the host, and the host reaches in only through `forward` entries.",
        fields=NETWORK_COMMON + (
            Field("forward", Kind.ENTRIES, "Host ports forwarded into the guest; a host "
                  "port may appear once per protocol in the whole VM.", default=[],
                  entries="forward"),
        ),
    ),
    "tap": Section(
        title="network, type `tap`",
        where="network[]",
        doc="An existing host tap interface (set it up beforehand; maqet runs no scripts).",
        fields=NETWORK_COMMON + (
            Field("ifname", Kind.STR, "Name of the host tap interface.", required=True,
                  pattern=C.IFNAME_RE, pattern_help=C.IFNAME_HELP, what="interface name"),
        ),
    ),
    "bridge": Section(
        title="network, type `bridge`",
        where="network[]",
        doc="A tap device attached to a host bridge by `qemu-bridge-helper` (the bridge "
            "must be allowed in its `bridge.conf`).",
        fields=NETWORK_COMMON + (
            Field("bridge", Kind.STR, "Name of the host bridge.", required=True,
                  pattern=C.IFNAME_RE, pattern_help=C.IFNAME_HELP, what="bridge name"),
        ),
    ),
    "network": Section(
        title="network, type `network`",
        where="network[]",
        doc="A NIC on a named network (`maqet network add`, the `maqet_network` module; "
            "see [networks.md](networks.md)): a segment, a point-to-point link or a host "
            "bridge. `type: network` may be left out when `network` is given. Which "
            "network exists, and that its MAC addresses and link ends are not taken, is "
            "checked when the VM is defined.",
        fields=(
            Field("type", Kind.ENUM, "Kind of host-side network backend.", required=True,
                  choices=C.NETWORK_TYPES),
            Field("network", Kind.STR, "Name of the network.", required=True,
                  pattern=C.NETWORK_NAME_RE, pattern_help=C.NETWORK_NAME_HELP,
                  what="network name"),
            Field("model", Kind.STR, "Guest NIC device model.", default=C.DEFAULT_NIC_MODEL,
                  pattern=C.NIC_MODEL_RE, pattern_help=C.NIC_MODEL_HELP, what="NIC model"),
            Field("mac", Kind.MAC, "MAC address of the NIC, `xx:xx:xx:xx:xx:xx`; stored in "
                  "lower case. Unset: derived from the VM's name and the NIC's position, so "
                  "it stays the same across restarts and hosts; two VMs on one network may "
                  "not share one.",
                  default_doc=f"`{C.DERIVED_MAC_PREFIX}:xx:xx:xx`, derived"),
            Field("end", Kind.ENUM, "Which end of a `link` network this NIC is; required "
                  "on a link, refused on other networks. Each end takes one VM.",
                  choices=C.LINK_ENDS),
        ),
    ),
})

FORWARD = Section(
    title="network[].forward[] (type `user`)",
    where="network[].forward[]",
    doc="One forwarded port. Entries are stored sorted by protocol, address and port.",
    fields=(
        Field("host", Kind.INT, "Port on the host, or `auto`: a free port QEMU binds at "
              "each start (`maqet show` and the inventory give the real one).", required=True,
              minimum=C.PORT_MIN, maximum=C.PORT_MAX),
        Field("guest", Kind.INT, "Port in the guest.", required=True,
              minimum=C.PORT_MIN, maximum=C.PORT_MAX),
        Field("protocol", Kind.ENUM, "Transport protocol.",
              default=C.DEFAULT_FORWARD_PROTOCOL, choices=C.FORWARD_PROTOCOLS),
        Field("host_address", Kind.IPV4, "Host address to listen on. maqet defaults to "
              "loopback, unlike QEMU (every interface): set `0.0.0.0` to expose the port.",
              default=C.DEFAULT_FORWARD_HOST_ADDRESS),
    ),
)
