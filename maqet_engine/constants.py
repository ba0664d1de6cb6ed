"""Every tunable number and fixed name of maqet, in one place.

Nothing else in the package hard-codes a timeout, a size limit, a file name or an
exit code: import it from here.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final
# --- process exit codes (documented in docs/cli.md; keep stable) -------------
EXIT_OK: Final = 0
EXIT_INTERNAL: Final = 1  # a bug in maqet: traceback with --debug
EXIT_USAGE: Final = 2  # bad command line or bad configuration
EXIT_NOT_FOUND: Final = 3  # VM, snapshot or file does not exist
EXIT_CONFLICT: Final = 4  # exists with another definition, wrong state, locked
EXIT_RUNTIME: Final = 5  # QEMU / QMP / runner failure, timeouts
EXIT_HOST: Final = 6  # host environment: missing binary, permissions, disk full, corrupt store
EXIT_AGENT: Final = 7  # the guest agent does not answer (no channel, not running, hung)
EXIT_INTERRUPTED: Final = 130  # Ctrl-C

# --- names ------------------------------------------------------------------
VM_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
VM_NAME_HELP: Final = (
    "1-63 characters: letters, digits, '_', '.', '-'; starting with a letter or digit"
)

# --- files and directories --------------------------------------------------
APP_NAME: Final = "maqet"
ENV_HOME: Final = "MAQET_HOME"
DB_FILE: Final = "maqet.db"
VMS_DIR: Final = "vms"
HOME_DATA_DIR: Final = "data"
HOME_RUNTIME_DIR: Final = "run"
HOME_CONFIG_DIR: Final = "config"
RUNTIME_DIR_MODE: Final = 0o700
PRIVATE_DIR_MODE: Final = 0o700  # data dir, VM directories
PRIVATE_FILE_MODE: Final = 0o600  # the store, logs (console logs carry secrets), disks
# Runtime roots without XDG_RUNTIME_DIR: root's in /run (only root creates names there),
# anyone else's in /tmp (checked, never trusted: see paths.py).
ROOT_RUNTIME_BASE: Final = "/run"
USER_RUNTIME_BASE: Final = "/tmp"
QMP_SOCKET: Final = "qmp.sock"
CONTROL_SOCKET: Final = "ctl.sock"
SERIAL_SOCKET: Final = "serial.sock"
AGENT_SOCKET: Final = "qga.sock"  # host end of the guest agent's virtio-serial port
LOCK_FILE: Final = "runner.lock"
# Locks live in the data directory, not the runtime one: a tmp cleaner or logind that
# removes the runtime directory must not make a live runner look dead.
LOCKS_DIR: Final = "locks"
RUNNER_LOG: Final = "runner.log"
QEMU_LOG: Final = "qemu.log"
SERIAL_LOG: Final = "serial.log"
# AF_UNIX sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX: Final = 107

# --- state store ------------------------------------------------------------
DB_BUSY_TIMEOUT_MS: Final = 30_000
EVENTS_SHOWN_DEFAULT: Final = 20
# Event retention (docs/observability.md): the store keeps the last EVENTS_KEEP events
# of each VM and none older than EVENTS_MAX_AGE_DAYS; each limit can be changed (0 turns
# it off) through its environment variable. Pruning runs inside the write of every
# EVENTS_PRUNE_EVERY-th event (by its id, so short-lived processes take part too); an
# age pass deletes at most EVENTS_PRUNE_AGE_BATCH of the oldest events.
ENV_EVENTS_KEEP: Final = "MAQET_EVENTS_KEEP"
ENV_EVENTS_MAX_AGE_DAYS: Final = "MAQET_EVENTS_MAX_AGE_DAYS"
EVENTS_KEEP: Final = 1000
EVENTS_MAX_AGE_DAYS: Final = 30
EVENTS_PRUNE_EVERY: Final = 100
EVENTS_PRUNE_AGE_BATCH: Final = 10_000
# `maqet events --follow` sleeps on inotify until a commit that recorded events touches
# EVENTS_STAMP_FILE (beside the store); without one it re-reads once per
# EVENTS_FOLLOW_RECHECK_S anyway (a safety net, not a poll loop).
EVENTS_STAMP_FILE: Final = "maqet.events"
EVENTS_FOLLOW_RECHECK_S: Final = 5.0
# Less free space than this on the store's filesystem: an I/O error is reported as a
# full disk (SQLite alone needs 32 KiB for the WAL index before it can read).
DISK_LOW_BYTES: Final = 1024 * 1024

# --- spec -------------------------------------------------------------------
DEFAULT_BINARY: Final = "qemu-system-x86_64"
DEFAULT_ACCEL: Final = "auto"
DEFAULT_DISPLAY: Final = "none"
DEFAULT_VGA: Final = "std"
DEFAULT_DISK_INTERFACE: Final = "virtio"
DEFAULT_NIC_MODEL: Final = "virtio-net-pci"
DEFAULT_VIRTFS_SECURITY_MODEL: Final = "mapped-xattr"
MAX_CPUS: Final = 1024
MIN_MEMORY_BYTES: Final = 2 * 1024 * 1024  # QEMU refuses less than 2 MiB
# x86-64 guests address at most 52 physical bits (QEMU's phys-bits cannot exceed 52):
# more RAM than 4 PiB can never start, so it is refused when the VM is defined.
MAX_MEMORY_BYTES: Final = 1 << 52
# The largest qcow2 image qemu-img creates with its default 64 KiB clusters: 32 MiB of
# L1 table (QCOW_MAX_L1_SIZE) x 512 MiB per L2 table = 2 PiB. Raw images get the same
# ceiling (their real limit is the host file system's).
MAX_DISK_BYTES: Final = 1 << 51
# Free-form QEMU option strings (machine, cpu_model, display) reach QEMU's command line
# and every message: letters, digits and the punctuation QEMU's option syntax uses.
QEMU_OPTION_RE: Final = re.compile(r"[A-Za-z0-9_.,:=+/@-]{1,512}", re.ASCII)
QEMU_OPTION_HELP: Final = (
    "1-512 characters: letters, digits and _ . , : = + / @ - (QEMU option syntax such as "
    "q35,smm=off)"
)
# Reading definitions: a definition is a small YAML text in a regular file; a device
# (/dev/zero), pipe or huge file is refused before it is read into memory.
MAX_DEFINITION_BYTES: Final = 1024 * 1024
# Nesting levels of a definition (a real one needs 5: network[].forward[].host); deeper
# input is refused before the YAML composer or deepcopy recurse into it.
MAX_DEFINITION_DEPTH: Final = 32
# Longest user value shown in a message (longer ones keep their start and end).
MESSAGE_VALUE_MAX: Final = 160
SPEC_HASH_ALGORITHM: Final = "sha256"
# Host paths in definitions (definition/hostpaths.py, docs/security.md): nothing a VM
# reads comes from HOST_SECRET_DIRS, nothing it writes goes to HOST_SYSTEM_DIRS; a virtfs
# share (without allow_dangerous) is none of SHARE_DENIED_EXACT and nothing inside
# HOST_SYSTEM_DIRS.
HOST_SECRET_DIRS: Final = ("/etc", "/proc", "/sys", "/dev", "/run")
HOST_SYSTEM_DIRS: Final = (*HOST_SECRET_DIRS, "/boot", "/usr")
SHARE_DENIED_EXACT: Final = ("/", "/root", "/home", "/var")
# Choices of the definition schema (docs/configuration.md is generated from them).
ACCEL_CHOICES: Final = ("auto", "kvm", "tcg")
VGA_CHOICES: Final = ("std", "virtio", "qxl", "cirrus", "none")
DISK_INTERFACES: Final = ("virtio", "ide", "scsi")
VIRTFS_SECURITY_MODELS: Final = ("mapped-xattr", "passthrough", "none")
NETWORK_TYPES: Final = ("user", "tap", "bridge", "network")
FORWARD_PROTOCOLS: Final = ("tcp", "udp")
DEFAULT_FORWARD_PROTOCOL: Final = "tcp"
# QEMU's own default for hostfwd is every interface; maqet only listens on loopback.
DEFAULT_FORWARD_HOST_ADDRESS: Final = "127.0.0.1"
PORT_MIN: Final = 1
PORT_MAX: Final = 65535
# A forward's host port "auto": QEMU (slirp) binds a free port at each start (hostfwd port
# 0); the runner reads back which one and records it (the VM view's ports, the inventory).
FORWARD_AUTO: Final = "auto"
# A bare number is MiB for memory (QEMU's -m) and bytes for disk sizes (qemu-img).
MEMORY_BARE_UNIT: Final = 1024 * 1024
DISK_BARE_UNIT: Final = 1
# Storage names double as QEMU node-names and device ids.
STORAGE_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,23}")
STORAGE_NAME_HELP: Final = (
    "1-24 characters: lower-case letters, digits, '_', '-'; starting with a letter"
)
SCSI_CONTROLLER_ID: Final = "scsi0"  # reserved: no storage entry may take this name
SCSI_CONTROLLER_MODEL: Final = "virtio-scsi-pci"
SERIAL_CHARDEV_ID: Final = "serial0"
NETDEV_ID_PREFIX: Final = "net"
QEMU_PROCESS_PREFIX: Final = "maqet-"  # -name NAME,process=maqet-NAME
# QEMU's confinement (docs/security.md). Root's QEMU drops to this user after start-up
# (-runas) unless MAQET_QEMU_USER names another one, or "root" (opt-out).
DEFAULT_QEMU_USER: Final = "maqet-qemu"
ENV_QEMU_USER: Final = "MAQET_QEMU_USER"
QEMU_USER_OPT_OUT: Final = "root"
QEMU_USER_CREATE: Final = "useradd --system --no-create-home --shell /usr/sbin/nologin maqet-qemu"
# seccomp: no obsolete syscalls, no fork/exec (spawn; allowed only for a bridge NIC,
# whose qemu-bridge-helper QEMU spawns), no scheduler/resource changes, and no set*id
# calls, except with -runas: QEMU 7.2 installs the filter before it drops to the user,
# so elevateprivileges=deny kills it (SIGSYS) at its own setuid.
SANDBOX_BASE: Final = "on,obsolete=deny,resourcecontrol=deny"
MOUNT_TAG_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,31}")
MOUNT_TAG_HELP: Final = "1-31 characters: letters, digits, '_', '.', '-'"
IFNAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
IFNAME_HELP: Final = "1-15 characters: letters, digits, '_', '.', '-'"
NIC_MODEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NIC_MODEL_HELP: Final = "a QEMU NIC device name such as virtio-net-pci, e1000 or rtl8139"
MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
# --- named networks (docs/networks.md) ----------------------------------------
NETWORK_KINDS: Final = ("segment", "link", "bridged")
NETWORK_NAME_RE: Final = VM_NAME_RE
NETWORK_NAME_HELP: Final = VM_NAME_HELP
LINK_ENDS: Final = ("a", "b")
# A NIC on a named network without a 'mac' gets one derived from the VM's name and the
# NIC's position, under QEMU's (locally administered, unicast) prefix.
DERIVED_MAC_PREFIX: Final = "52:54:00"
# A segment without 'group'/'port' gets both derived from its name: the same name on two
# hosts is the same segment. 239.255.0.0/16 is the IPv4 local scope (RFC 2365); its
# last /24 is left out (SSDP 239.255.255.250, SLP 239.255.255.253 live there).
SEGMENT_GROUP_BASE: Final = "239.255.0.0"
SEGMENT_GROUP_SECOND_OCTETS: Final = 255  # 239.255.0.x .. 239.255.254.x
SEGMENT_PORT_BASE: Final = 20000  # derived ports: 20000-29999 (below Linux's ephemeral range)
SEGMENT_PORT_SPAN: Final = 10000
LINK_PORT_BASE: Final = 30000  # derived link ports: pairs 30000/30001 .. 31998/31999
LINK_PORT_PAIRS: Final = 1000
NETWORK_PORT_MIN: Final = 1024  # a network's UDP ports: no privileged ones
DEFAULT_SEGMENT_INTERFACE: Final = "lo"
DEFAULT_SEGMENT_TTL: Final = 1
DEFAULT_LINK_ADDRESS: Final = "127.0.0.1"
LINK_END_RE: Final = re.compile(r"[0-9.]{7,15}(:[0-9]{1,5})?", re.ASCII)
LINK_END_HELP: Final = "an IPv4 address with an optional port, such as 10.0.0.1:30000"
# Tap devices of bridged networks: 'mqt' + 4 hex digits of the installation's data
# directory + '-' + the VM id in hex + '-' + the NIC's position; at most IFNAMSIZ-1.
TAP_PREFIX: Final = "mqt"
IFNAME_MAX: Final = 15
NIC_FD_PLACEHOLDER: Final = "NIC{index}_FD"  # shown for a tap fd (maqet show --argv)
TAG_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:=-]{0,62}")
TAG_HELP: Final = (
    "1-63 characters: letters, digits, '_', '.', ':', '=', '-'; starting with a letter or digit"
)
DID_YOU_MEAN_CUTOFF: Final = 0.6  # difflib similarity for "did you mean"
# IDE buses x units per bus. QEMU only places the first IDE device by itself, so maqet
# names the bus of each; q35's AHCI has 6 one-unit ports, i440fx ("pc", the x86
# default machine) 2 buses of 2 units.
IDE_LAYOUT_Q35: Final = (6, 1)
IDE_LAYOUT_I440FX: Final = (2, 2)
KVM_DEVICE: Final = "/dev/kvm"
CPUINFO_FILE: Final = "/proc/cpuinfo"

# --- runner / IPC -----------------------------------------------------------
IPC_MAX_MESSAGE_BYTES: Final = 1024 * 1024
RUNNER_READY_TIMEOUT_S: Final = 30.0
QMP_CONNECT_TIMEOUT_S: Final = 10.0
IPC_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 30.0
QUIT_TIMEOUT_S: Final = 5.0
KILL_TIMEOUT_S: Final = 5.0
# Bound on each QMP call of the stop ladder: a wedged (SIGSTOPped) QEMU never answers,
# and SIGKILL must still be reached. A call left unanswered skips its rung's wait, so a
# stop of a hung QEMU returns within 2 x this + SIGKILL, whatever its timeout; QMP's
# disconnect after an exit waits at most this too (docs/runner.md, Failure behaviour).
QMP_LADDER_CALL_TIMEOUT_S: Final = 0.5
QEMU_LOG_TAIL_LINES: Final = 10

# --- operations and logs (maqet_engine/ops.py, maqet_engine/log.py) ----------
# Every engine call runs under an operation id: made per CLI command or module run
# (OP_ID_BYTES random bytes as hex), or given by the caller (Ansible's op_id option).
OP_ID_BYTES: Final = 6
OP_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
OP_ID_HELP: Final = (
    "1-64 characters: letters, digits, '_', '.', ':', '-'; starting with a letter or digit"
)
# The runner log's format: "text" (default) or "json" (one object per line). The
# spawner passes its own process's choice to the runner (--log-format).
ENV_LOG_FORMAT: Final = "MAQET_LOG_FORMAT"
LOG_FORMATS: Final = ("text", "json")
LOG_FORMAT_SNIFF_BYTES: Final = 4096  # decision lines follow the runner log's last line

# --- metrics (maqet_engine/engine/metrics.py, docs/observability.md) -----------
# One runner request per running VM (block I/O), in parallel, each bounded by this: a
# hung runner costs its own series (maqet_vm_scrape_error 1), never the whole scrape.
METRICS_VM_TIMEOUT_S: Final = 0.5
METRICS_THREADS: Final = 16
METRICS_TEXTFILE: Final = "maqet.prom"  # the file --textfile DIR writes (atomically)
METRICS_DEFAULT_ADDRESS: Final = "127.0.0.1"  # --listen PORT binds loopback only

# --- runner internals (maqet_engine/runner) ----------------------------------
START_LOCK_FILE: Final = "start.lock"  # serialises spawners of one VM's runner
# Sent to a live runner whose control socket vanished (its runtime directory was
# removed): it re-creates the directory and the socket (runner/control.py).
RECREATE_SOCKET_SIGNAL: Final = "SIGUSR2"
RUNNER_MODULE: Final = "maqet_engine.runner"
QMP_CHARDEV_ID: Final = "maqet-qmp"  # the QMP monitor QEMU gets as a pre-bound socket fd
QMP_FD_PLACEHOLDER: Final = "QMP_FD"  # shown in place of that fd's number (maqet show --argv)
QMP_SOCKET_BACKLOG: Final = 16
AGENT_FD_PLACEHOLDER: Final = "AGENT_FD"  # the agent socket's fd in a shown command line
IPC_STATUS_TIMEOUT_S: Final = 5.0  # status/view queries must not hang a `maqet status`
# A stop first pings the runner: one that holds its lock but does not answer within this
# (SIGSTOPped, wedged) is reported, or with --force killed together with its QEMU.
RUNNER_PING_TIMEOUT_S: Final = 2.0
RUNNER_EXIT_TIMEOUT_S: Final = 10.0  # after a stop reply: wait for the runner to let go
RUNNER_REPLY_GRACE_S: Final = 2.0  # runner: time given to in-flight replies after QEMU exit
SERIAL_READ_CHUNK: Final = 65536
SERIAL_BUFFER_CHARS: Final = 4 * 1024 * 1024  # serial text the runner keeps for serial_wait
SERIAL_WAIT_TIMEOUT_S: Final = 60.0
# serial_read: most console characters one reply carries (escape-free text; JSON may take
# up to 6 bytes a character, which keeps a reply under IPC_MAX_MESSAGE_BYTES).
SERIAL_READ_MAX_CHARS: Final = 128 * 1024
# maqet wait --ssh / engine.wait_ssh: the guest's SSH banner through its forward. Read
# with a 1-3 s timeout (OpenSSH under TCG livelocks on much shorter probes), retried with
# a short bounded back-off; a real cloud image under TCG takes a minute or more.
SSH_WAIT_TIMEOUT_S: Final = 300.0
SSH_BANNER_READ_TIMEOUT_S: Final = 2.0
SSH_BANNER_MAX_BYTES: Final = 8192  # lines before "SSH-" (RFC 4253 4.2) and the banner
SSH_PROBE_PAUSE_FIRST_S: Final = 0.1
SSH_PROBE_PAUSE_MAX_S: Final = 0.5
# Console text before a host key block's END line that is searched for its BEGIN line.
HOST_KEYS_WINDOW_CHARS: Final = 64 * 1024
LOG_TAIL_BYTES: Final = 64 * 1024  # read at most this much from the end of a log for a tail
LOG_FOLLOW_CHUNK: Final = 65536  # `maqet logs -f`: largest read of new log data at once
INOTIFY_READ_BYTES: Final = 4096  # room for several inotify events per read
READY_PIPE_CHUNK: Final = 65536  # spawner: read size for the runner's readiness line
# How long `maqet keys/type` hold each key chord down: the runner presses it (QMP
# input-send-event), waits this long, releases it, then presses the next one.
SEND_KEY_HOLD_MS: Final = 20
# Allowance per key for its two QMP input-send-event round trips (~4 ms measured under
# TCG): callers wait count * (hold + this) on top of their own timeout for typing.
SEND_KEY_ROUND_TRIPS_S: Final = 0.02
SCREENDUMP_FORMAT: Final = "png"
QMP_STATUS_INTERNAL_ERROR: Final = "internal-error"

# --- what one client may cost a runner (docs/runner.md, "Limits of the control socket") ---
# Client input is bounded before it is parsed, a busy runner says so instead of queueing
# without end, and a regex search is interrupted before it can stall the event loop.
IPC_MAX_REQUEST_BYTES: Final = 64 * 1024  # one request line (replies: IPC_MAX_MESSAGE_BYTES)
IPC_MAX_DEPTH: Final = 64  # nesting of arrays/objects in a request
IPC_MAX_ID_CHARS: Final = 128  # a string request id (integer ids: 64-bit signed)
IPC_MAX_CLIENTS: Final = 64  # connections served at once; one more gets RunnerBusy
IPC_ERROR_CHARS: Final = 2048  # error messages in replies are cut here (they quote input)
SOMAXCONN_FILE: Final = "/proc/sys/net/core/somaxconn"  # the control socket's listen backlog
IPC_CONNECT_TIMEOUT_S: Final = 5.0  # client: waiting in a full backlog, retrying a refusal
IPC_RETRY_FIRST_S: Final = 0.002  # client: first pause before retrying a busy/refused runner
IPC_RETRY_MAX_S: Final = 0.1  # client: the pause doubles up to this
IPC_WARNINGS_PER_MINUTE: Final = 30  # runner.log lines about misbehaving clients; more counted
SERIAL_PATTERN_MAX_CHARS: Final = 4096
SERIAL_MATCH_BUDGET_S: Final = 0.05  # CPU one regex search of one line may take, then refused
SERIAL_MATCH_SLICE_S: Final = 0.01  # a wait searches this long, then lets the event loop run

# --- storage and snapshots (maqet_engine/storage, maqet_engine/snapshots) ------
QEMU_IMG: Final = "qemu-img"
QEMU_IMG_TIMEOUT_S: Final = 600.0  # creating/snapshotting a big image may take minutes
SNAPSHOTTABLE_FORMATS: Final = frozenset({"qcow2"})  # formats that hold internal snapshots
DISK_IMAGE_TYPES: Final = ("qcow2", "raw")  # storage types maqet creates with qemu-img
SNAPSHOT_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
SNAPSHOT_NAME_HELP: Final = (
    "1-63 characters: letters, digits, '_', '.', ':', '-'; starting with a letter or digit"
)
SNAPSHOT_STATES: Final = ("present", "absent", "reverted")
SNAPSHOT_JOB_TIMEOUT_S: Final = 300.0  # a live snapshot writes all guest RAM
SNAPSHOT_JOB_PREFIX: Final = "maqet-snap-"  # QMP job-id of maqet's snapshot jobs
SNAPSHOT_JOB_EVENT: Final = "JOB_STATUS_CHANGE"
SNAPSHOT_PROGRESS_AFTER_S: Final = 1.0  # show a progress line for anything slower
PROGRESS_TICK_S: Final = 0.125  # redraw interval of a TTY progress bar
PROGRESS_BAR_WIDTH: Final = 16  # cells of the indeterminate bar, brackets excluded

# --- images (maqet_engine/images: the content-addressed image cache) -----------
IMAGES_DIR: Final = "images"  # <data dir>/images: the cache root the engine passes
IMAGE_DIGEST_ALGORITHM: Final = "sha256"  # the cache is addressed by this digest only
IMAGE_DIGEST_HEX_LEN: Final = 64
IMAGE_DIGEST_PREFIX_MIN: Final = 8  # shortest digest prefix `rm` accepts
IMAGE_DIGEST_SHOWN: Final = 12  # hex digits of a digest shown in messages
IMAGE_OBJECTS_DIR: Final = "sha256"  # <root>/sha256/<hex> and <hex>.json
IMAGE_LOCKS_DIR: Final = "locks"  # <root>/locks/<name>.lock: one flock per digest or path
IMAGE_SIDECAR_SUFFIX: Final = ".json"
IMAGE_CACHE_DIR_MODE: Final = 0o700
IMAGE_TEMP_MODE: Final = 0o600  # a download in progress
IMAGE_FILE_MODE: Final = 0o400  # a cached image: never written again, only backs overlays
IMAGE_URL_SCHEMES: Final = ("http", "https")
IMAGE_HTTP_TIMEOUT_S: Final = 30.0  # connect, and each read: a stalled download fails
IMAGE_READ_CHUNK: Final = 1024 * 1024  # bytes read (and hashed, written) at once
IMAGE_SUMS_MAX_BYTES: Final = 1024 * 1024  # largest SHA256SUMS file read
IMAGE_PROGRESS_INTERVAL_S: Final = 0.1  # progress callbacks: at most ~10 per second
IMAGE_SNIFF_BYTES: Final = 4096  # bytes read from the start to tell a disk from a page
IMAGE_SECTOR: Final = 512  # a raw disk image is a whole number of these
IMAGE_PINS_MAX: Final = 16  # remembered (source -> digest) resolutions per image

# --- cloud-init ---------------------------------------------------------------
# The NoCloud seed (maqet_engine/cloudinit): an ISO 9660 image cloud-init finds by its label.
CLOUD_INIT_LABEL: Final = "cidata"
CLOUD_INIT_USER_DATA: Final = "user-data"
CLOUD_INIT_META_DATA: Final = "meta-data"
CLOUD_INIT_NETWORK_CONFIG: Final = "network-config"
CLOUD_INIT_SEED_FILE: Final = "cidata.iso"  # the seed maqet writes in the VM's directory
KNOWN_HOSTS_FILE: Final = "known_hosts"  # the guest's host keys, written by its runner
# known_hosts name of a VM's guest for ssh -o HostKeyAlias (guest at an address of its own)
HOST_KEY_ALIAS_PREFIX: Final = "maqet-vm-"
CLOUD_INIT_NODE_NAME: Final = "cidata"  # node-name and device id of the seed disk (reserved)
CLOUD_INIT_FILE_MODE: Final = 0o600  # seed and known_hosts files (user-data may hold secrets)
# instance-id = PREFIX + VM name + "-" + the first HEX digits of the content's sha256.
CLOUD_INIT_INSTANCE_ID_PREFIX: Final = "maqet-"
CLOUD_INIT_INSTANCE_ID_HEX: Final = 16
CLOUD_INIT_SUDO_ALL: Final = "ALL=(ALL) NOPASSWD:ALL"  # what `sudo: true` grants
CLOUD_INIT_DEFAULT_USER: Final = "default"  # cloud-init's name for the image's default user
# First bytes cloud-init recognizes as user-data (cloudinit/handlers INCLUSION_TYPES_MAP,
# MIME headers, jinja templates), compared case-insensitively after leading blanks.
CLOUD_INIT_USER_DATA_STARTS: Final = (
    "#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "#upstart-job",
    "## template: jinja", "content-type:", "mime-version:",
)
USER_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USER_NAME_HELP: Final = (
    "1-32 characters: lower-case letters, digits, '_', '-'; starting with a letter or '_'"
)
HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
HOSTNAME_HELP: Final = (
    "dot-separated labels of 1-63 letters, digits and '-' (not at either end), "
    "253 characters at most"
)
# OpenSSH public key types accepted in authorized keys and read from the console.
SSH_KEY_TYPES: Final = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})
SSH_DEFAULT_PORT: Final = 22
# Longest public key line accepted (a 16384-bit RSA key is ~2.8 KB); bounds parsing work.
SSH_KEY_LINE_MAX: Final = 8192

# --- the guest agent (docs/guest-agent.md; runner/agent.py is the channel) -----------------
# `agent: true` adds a virtio-serial controller and a port named AGENT_PORT_NAME whose host
# end (a chardev socket the spawner binds, like QMP's) the runner owns. Device ids contain
# a '.', which no storage name may: they never collide with the user's devices.
AGENT_PORT_NAME: Final = "org.qemu.guest_agent.0"  # where qemu-ga looks for its port
AGENT_CHARDEV_ID: Final = "maqet-qga"
AGENT_SERIAL_ID: Final = "maqet.vser0"  # the virtio-serial-pci controller (bus maqet.vser0.0)
AGENT_PORT_ID: Final = "maqet.qga0"  # the virtserialport: QMP VSERPORT_CHANGE names it
AGENT_TIMEOUT_S: Final = 30.0  # default: waiting for the agent to answer (sync, each reply)
# The agent channel's states, as `maqet status` shows them (runner/agent.py sets them).
AGENT_ABSENT: Final = "absent"  # the guest has not opened the port (no qemu-ga yet)
AGENT_SYNCING: Final = "syncing"
AGENT_CONNECTED: Final = "connected"
AGENT_CLOSED: Final = "closed"  # QEMU exited
# wait_agent: the least time one more guest-info is given after the port closed under one
AGENT_WAIT_MIN_S: Final = 0.05
AGENT_SYNC_FIRST_S: Final = 0.5  # guest-sync: first wait for the id to come back,
AGENT_SYNC_MAX_S: Final = 4.0  # doubling up to this between attempts
AGENT_SYNC_ATTEMPTS_UNKNOWN: Final = 3  # attempts while the port's state is unknown (adopted)
# A reply line of qemu-ga: guest-exec-status carries up to 2 x 16 MiB of output as base64.
AGENT_MAX_REPLY_BYTES: Final = 48 * 1024 * 1024
AGENT_EXEC_OUTPUT_CAP: Final = 16 * 1024 * 1024  # qemu-ga 7.2 keeps this much per stream
AGENT_EXEC_MAX_INPUT: Final = 16 * 1024 * 1024  # stdin of one exec (sent in one guest-exec)
# guest-exec-status: the first pause, growing by POLL_GROWTH up to POLL_MAX_S, and after
# POLL_SLOW_AFTER_S of a long command up to POLL_SLOW_S. Two costs pull apart: an exit is
# seen up to half the command's time (or POLL_MAX_S) late, and each ask costs the guest
# ~1.3 ms of CPU under TCG (measured: x1.25 from 2 ms made `python3 -c pass` 10% slower
# in the guest than x1.5 from 5 ms). For an Ansible module (~2 s here) both together are
# ~80 ms, flat for caps of 50-100 ms.
AGENT_EXEC_POLL_FIRST_S: Final = 0.005
AGENT_EXEC_POLL_GROWTH: Final = 1.5
AGENT_EXEC_POLL_MAX_S: Final = 0.05
AGENT_EXEC_POLL_SLOW_AFTER_S: Final = 10.0
AGENT_EXEC_POLL_SLOW_S: Final = 0.5
# While a command runs, the runner tells the client it still does this often, so the
# client's wait for each message is bounded even for a command without a timeout.
AGENT_EXEC_HEARTBEAT_S: Final = 5.0
AGENT_FILE_CHUNK: Final = 1024 * 1024  # bytes per guest-file-read/-write (measured best)
AGENT_FILE_MODE_WRITE: Final = "wb"
AGENT_FILE_MODE_READ: Final = "rb"
# Data on a stream (docs/runner.md, "Streams"): what one line carries, raw bytes before
# base64. Client lines stay under IPC_MAX_REQUEST_BYTES, runner lines under
# IPC_MAX_MESSAGE_BYTES.
IPC_STREAM_CLIENT_CHUNK: Final = 48_000  # 64,000 base64 characters: room for the JSON
IPC_STREAM_RUNNER_CHUNK: Final = 512 * 1024
# `maqet console`: Ctrl-] detaches (as telnet and virsh); a viewer that falls this far
# behind the console is disconnected rather than making the runner hold its backlog.
CONSOLE_DETACH_BYTE: Final = 0x1D
CONSOLE_VIEWER_BACKLOG: Final = 1024 * 1024
