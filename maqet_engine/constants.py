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
QMP_SOCKET: Final = "qmp.sock"
CONTROL_SOCKET: Final = "ctl.sock"
SERIAL_SOCKET: Final = "serial.sock"
LOCK_FILE: Final = "runner.lock"
RUNNER_LOG: Final = "runner.log"
QEMU_LOG: Final = "qemu.log"
SERIAL_LOG: Final = "serial.log"
# AF_UNIX sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX: Final = 107

# --- state store ------------------------------------------------------------
DB_BUSY_TIMEOUT_MS: Final = 30_000
EVENTS_SHOWN_DEFAULT: Final = 20
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
SPEC_HASH_ALGORITHM: Final = "sha256"
# Host paths a virtfs share may not export unless `allow_dangerous: true`.
DANGEROUS_SHARE_PATHS: Final = frozenset({"/", "/etc", "/proc", "/sys", "/dev", "/boot"})
# Choices of the definition schema (docs/configuration.md is generated from them).
ACCEL_CHOICES: Final = ("auto", "kvm", "tcg")
VGA_CHOICES: Final = ("std", "virtio", "qxl", "cirrus", "none")
DISK_INTERFACES: Final = ("virtio", "ide", "scsi")
VIRTFS_SECURITY_MODELS: Final = ("mapped-xattr", "passthrough", "none")
NETWORK_TYPES: Final = ("user", "tap", "bridge")
FORWARD_PROTOCOLS: Final = ("tcp", "udp")
DEFAULT_FORWARD_PROTOCOL: Final = "tcp"
# QEMU's own default for hostfwd is every interface; maqet only listens on loopback.
DEFAULT_FORWARD_HOST_ADDRESS: Final = "127.0.0.1"
PORT_MIN: Final = 1
PORT_MAX: Final = 65535
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
MOUNT_TAG_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,31}")
MOUNT_TAG_HELP: Final = "1-31 characters: letters, digits, '_', '.', '-'"
IFNAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
IFNAME_HELP: Final = "1-15 characters: letters, digits, '_', '.', '-'"
NIC_MODEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NIC_MODEL_HELP: Final = "a QEMU NIC device name such as virtio-net-pci, e1000 or rtl8139"
MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
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

# --- runner internals (maqet_engine/runner) ----------------------------------
START_LOCK_FILE: Final = "start.lock"  # serialises spawners of one VM's runner
RUNNER_MODULE: Final = "maqet_engine.runner"
QMP_CHARDEV_ID: Final = "maqet-qmp"  # the QMP monitor QEMU gets as a pre-bound socket fd
QMP_FD_PLACEHOLDER: Final = "QMP_FD"  # shown in place of that fd's number (maqet show --argv)
QMP_SOCKET_BACKLOG: Final = 16
IPC_BACKLOG: Final = 64
IPC_STATUS_TIMEOUT_S: Final = 5.0  # status/view queries must not hang a `maqet status`
# A stop first pings the runner: one that holds its lock but does not answer within this
# (SIGSTOPped, wedged) is reported, or with --force killed together with its QEMU.
RUNNER_PING_TIMEOUT_S: Final = 2.0
RUNNER_EXIT_TIMEOUT_S: Final = 10.0  # after a stop reply: wait for the runner to let go
RUNNER_REPLY_GRACE_S: Final = 2.0  # runner: time given to in-flight replies after QEMU exit
SERIAL_READ_CHUNK: Final = 65536
SERIAL_BUFFER_CHARS: Final = 4 * 1024 * 1024  # serial text the runner keeps for serial_wait
SERIAL_WAIT_TIMEOUT_S: Final = 60.0
LOG_TAIL_BYTES: Final = 64 * 1024  # read at most this much from the end of a log for a tail
LOG_FOLLOW_CHUNK: Final = 65536  # `maqet logs -f`: largest read of new log data at once
INOTIFY_READ_BYTES: Final = 4096  # room for several inotify events per read
READY_PIPE_CHUNK: Final = 65536  # spawner: read size for the runner's readiness line
SEND_KEY_HOLD_MS: Final = 20  # QMP send-key hold time per key for `maqet keys/type`
SCREENDUMP_FORMAT: Final = "png"
QMP_STATUS_INTERNAL_ERROR: Final = "internal-error"

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
