#!/usr/bin/env bash
# Build (or reuse) the "ssh guest": the Debian cloud kernel plus an initramfs with busybox,
# dropbear, sftp-server, python3.11 and qemu-guest-agent, root in RAM. Ansible can reach it
# over SSH. Every file comes from Debian packages (`apt-get download` + `dpkg-deb -x`); nothing
# is installed on the host. See README.md ("The ssh guest") for what /init does.
#
# Output: ${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}/ssh/<kernel-version>/
#   {vmlinuz,initrd.gz,build-info,recipe} and a `current` symlink next to it. The output
# directory is the last line on stdout; everything else goes to stderr. A complete cache made
# by the current recipe (this script + lib-guest.sh) is reused untouched. Builds happen in a
# temporary directory and are renamed into place under an flock, so a killed or concurrent
# build never leaves a half-written cache.
#
# Usage: build-ssh-guest.sh [--force]
#
# Boot: -kernel vmlinuz -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet cryptomgr.notests
#   maqet.ssh_key=<base64 of authorized_keys lines>" -m 256 (a NoCloud seed works instead of
#   or besides maqet.ssh_key).
set -euo pipefail

LOG_TAG=build-ssh-guest
SELF=$(readlink -f "${BASH_SOURCE[0]}")
LIB=$(dirname "$SELF")/lib-guest.sh
# shellcheck source=lib-guest.sh
source "$LIB"

MARKER=MAQET-GUEST-SSH-READY
APPEND="console=ttyS0 panic=-1 quiet cryptomgr.notests"
# Loaded at every boot, in this order (each after its dependencies). virtio_rng early: with
# `-device virtio-rng-pci` the kernel's random pool is ready at once; without it dropbearkey's
# getrandom() waits ~1.1 s under TCG for the kernel to gather entropy itself.
BOOT_MODULES=(evdev button virtio_pci virtio_rng virtio_net virtio_console virtio_blk)
# Loaded only when the guest has a virtio disk, to read a NoCloud seed (isofs needs cdrom).
SEED_MODULES=(cdrom isofs fat vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859_1)
USER_PKGS=(dropbear-bin openssh-sftp-server python3.11-minimal libpython3.11-minimal
    libpython3.11-stdlib qemu-guest-agent base-files)
# Standard library parts that no test or Ansible module needs.
PY_TRIM=(test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data __phello__ turtle.py
    unittest/test ctypes/test sqlite3/test distutils/tests lib-dynload/_test*
    lib-dynload/xxlimited* lib-dynload/_xxtestfuzz* lib-dynload/_ctypes_test*)

CACHE=$CACHE_ROOT/ssh
OUTPUTS=(vmlinuz initrd.gz)

parse_options "$@"

lock_or_reuse "$FORCE"
start_build

# --- fetch and unpack -----------------------------------------------------------------------
# The libraries come from the same release: every lib*/zlib1g package in the dependency closure
# (a superset; only what the loader actually resolves below goes into the image).
mapfile -t LIB_PKGS < <(
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "${USER_PKGS[@]}" |
        grep -E '^(lib[^ <]*|zlib1g)$' | grep -v -E 'perl|^libpam|^libsemanage' | sort -u
)
((${#LIB_PKGS[@]})) || die "apt-cache depends listed no libraries for ${USER_PKGS[*]}"
ALL_PKGS=("$KPKG" "$BUSYBOX_PKG" "${USER_PKGS[@]}" "${LIB_PKGS[@]}")
fetch_debs "${ALL_PKGS[@]}"

STAGE=$WORK/stage
mkdir -p "$STAGE"
unpack_busybox "$STAGE"
unpack_kernel
INFO=()
for pkg in "${ALL_PKGS[@]}"; do
    case $pkg in
        "$KPKG" | "$BUSYBOX_PKG") ;;  # unpacked above
        *) dpkg-deb -x "${DEB[$pkg]}" "$STAGE" ;;
    esac
    INFO+=("$pkg $(dpkg-deb -f "${DEB[$pkg]}" Version)")
done

# --- initramfs tree: busybox and modules ----------------------------------------------------
R=$WORK/initramfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/lib,proc,sys,dev,tmp,run,root,var/log,lib/modules,lib64} \
    "$R"/etc/{acpi/PWRF,dropbear,ssh} "$R/mnt/seed"
chmod 1777 "$R/tmp"
chmod 700 "$R/root"
ln -s ../run "$R/var/run"
ln -s ../tmp "$R/var/tmp"
cp "$BB" "$R/bin/busybox"

module_order "${BOOT_MODULES[@]}"
BOOT_ORDER=("${ORDER[@]}")
BOOT_INSMODS=$(copy_modules "$R/lib/modules" "${BOOT_ORDER[@]}")
module_order -- "${SEED_MODULES[@]}"
SEED_ORDER=("${ORDER[@]}")
SEED_INSMODS=$(copy_modules "$R/lib/modules" "${SEED_ORDER[@]}")

# --- userland: ELF files and the libraries the staged loader resolves for them --------------
LOADER=$STAGE/lib64/ld-linux-x86-64.so.2
LIBPATH=$STAGE/lib/x86_64-linux-gnu:$STAGE/usr/lib/x86_64-linux-gnu
[[ -e $LOADER ]] || die "no staged loader at lib64/ld-linux-x86-64.so.2"

copy_rel() {  # copy_rel PATH-IN-STAGE: same path in the initramfs, symlinks resolved
    mkdir -p "$R/$(dirname "$1")"
    cp -L "$STAGE/$1" "$R/$1"
}

PY=usr/lib/python3.11
for f in usr/sbin/dropbear usr/bin/dropbearkey usr/lib/openssh/sftp-server usr/bin/python3.11 \
    usr/sbin/qemu-ga; do
    [[ -f $STAGE/$f ]] || die "no $f in the staged packages"
    copy_rel "$f"
done
copy_rel lib64/ld-linux-x86-64.so.2
# glibc dlopens libgcc_s when a thread exits through pthread_exit (Python does at shutdown).
copy_rel lib/x86_64-linux-gnu/libgcc_s.so.1

# The standard library, trimmed, precompiled: Debian ships no .pyc, and compiling every import
# under TCG costs seconds.
mkdir -p "$R/usr/lib" "$R/etc"
cp -a "$STAGE/$PY" "$R/$PY"
cp -a "$STAGE/etc/python3.11" "$R/etc/"
for t in "${PY_TRIM[@]}"; do
    # shellcheck disable=SC2086  # globs in PY_TRIM
    rm -rf "$R/$PY/"$t
done
find "$R/$PY" -name __pycache__ -prune -exec rm -rf {} +
ln -s python3.11 "$R/usr/bin/python3"

ELFS=("$R"/usr/sbin/dropbear "$R"/usr/bin/dropbearkey "$R"/usr/lib/openssh/sftp-server
    "$R"/usr/bin/python3.11 "$R"/usr/sbin/qemu-ga "$R/$PY"/lib-dynload/*.so)
declare -A NEEDED
for elf in "${ELFS[@]}"; do
    out=$("$LOADER" --library-path "$LIBPATH" --list "$elf" 2>&1) || true
    if grep -q 'not found' <<<"$out"; then
        case $elf in
            */lib-dynload/*)  # an optional extension module: drop it rather than fail
                log "dropping ${elf##*/}: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
                rm -f "$elf"
                continue ;;
            *) die "unresolved libraries for ${elf#"$R"/}: $out" ;;
        esac
    fi
    while read -r path; do
        case $path in
            "$STAGE"/*) NEEDED[${path#"$STAGE"/}]=1 ;;
            *) die "${elf#"$R"/} resolved $path outside the staged packages (package missing)" ;;
        esac
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$out")
done
for rel in "${!NEEDED[@]}"; do copy_rel "$rel"; done

# Compile with the staged interpreter itself (its magic number is the one that counts), run
# through the staged loader; unchecked-hash pycs are used without stat()ing their sources.
PYTHONHOME=$STAGE/usr PYTHONDONTWRITEBYTECODE= "$LOADER" --library-path "$LIBPATH" \
    "$STAGE/usr/bin/python3.11" -m compileall -q -j0 --invalidation-mode unchecked-hash \
    -s "$R" -p / "$R/$PY" >&2 || die "compileall failed"

ln -s openssh/sftp-server "$R/usr/lib/sftp-server"  # where Debian's dropbear looks for it
cp "$STAGE/usr/lib/os-release" "$R/usr/lib/os-release"
ln -s ../usr/lib/os-release "$R/etc/os-release"
cp "$STAGE/etc/debian_version" "$R/etc/debian_version"

# --- configuration --------------------------------------------------------------------------
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
# '*': no password can match, but the account is not locked ('!' would refuse key logins too).
echo 'root:*:19000:0:99999:7:::' >"$R/etc/shadow"
chmod 600 "$R/etc/shadow"
printf '/bin/sh\n/bin/ash\n' >"$R/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"

# ACPI power button (QMP system_powerdown) -> acpid -> this handler -> immediate power off.
cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/busybox sh
sync
exec /bin/busybox poweroff -f
EOF
# qemu-ga's guest-shutdown runs /sbin/shutdown -P|-H|-r +0 "message"; busybox has none.
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/busybox sh
sync
case " $* " in
    *" -r "*) exec /bin/busybox reboot -f ;;
    *" -H "*) exec /bin/busybox halt -f ;;
    *) exec /bin/busybox poweroff -f ;;
esac
EOF
chmod 755 "$R/etc/acpi/PWRF/00000080" "$R/sbin/shutdown"

INIT=$(cat <<'EOF'
#!/bin/busybox sh
# maqet ssh test guest /init (generated by tests/guest/build-ssh-guest.sh)
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PS1='maqet-ssh# '
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
exec </dev/console >/dev/console 2>&1
say() { echo "maqet-ssh-guest: $*"; }
hostname maqet-ssh-guest

@BOOT_INSMODS@

# busybox acpid opens /dev/input/event* only after it started; a powerdown sent before that is
# lost. Run it in the foreground (known pid) and wait until it holds every event device open.
acpid -f -l /var/log/acpid.log -p /run/acpid.pid &
acpid_pid=$!
tries=0
while :; do
    want=0; have=0
    for dev in /dev/input/event*; do [ -e "$dev" ] && want=$((want + 1)); done
    for fd in /proc/$acpid_pid/fd/*; do
        case $(readlink "$fd" 2>/dev/null) in /dev/input/event*) have=$((have + 1)) ;; esac
    done
    [ "$want" -gt 0 ] && [ "$have" -ge "$want" ] && break
    tries=$((tries + 1))
    if [ "$tries" -ge 500 ]; then
        say "acpid holds $have of $want input devices; powerdown may be lost"
        break
    fi
    usleep 10000
done

# Network: QEMU user networking (slirp) always puts the guest at 10.0.2.15, gateway 10.0.2.2.
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    echo 'nameserver 10.0.2.3' >/etc/resolv.conf
fi

# Authorized keys for root come from outside, never from the image:
# (a) maqet.ssh_key=<base64 of authorized_keys lines> on the kernel command line (repeatable);
# (b) a NoCloud seed: a virtio disk with an iso9660 or vfat filesystem labelled cidata/CIDATA.
mkdir -p /root/.ssh
chmod 700 /root/.ssh
AK=/root/.ssh/authorized_keys
: >"$AK"
set -f
for arg in $(cat /proc/cmdline); do
    case $arg in
        maqet.ssh_key=*)
            if echo "${arg#maqet.ssh_key=}" | base64 -d >>"$AK"; then echo >>"$AK"
            else say "maqet.ssh_key is not valid base64"; fi ;;
    esac
done
set +f

# A minimal cloud-init imitation. From user-data: every block-list item that is an SSH public
# key (ssh_authorized_keys: and users: [...] ssh_authorized_keys:, all for root, the only
# user), and `hostname:`; from meta-data: `local-hostname:` (user-data's hostname wins, as in
# cloud-init). Flow-style lists ([a, b]) and other cloud-config keys are not understood.
new_hostname=
yaml_value() {  # yaml_value KEY FILE: the scalar of a top-level "KEY: value" line
    sed -n -E "s/^$1:[[:space:]]*[\"']?([^\"' #]+).*/\\1/p" "$2" | head -n 1
}
if ls /sys/block | grep -q '^vd'; then
    @SEED_INSMODS@
    seed=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null || true)
    if [ -n "$seed" ] && mount -o ro "$seed" /mnt/seed; then
        if [ -f /mnt/seed/user-data ]; then
            sed -n -E "s/^[[:space:]]*-[[:space:]]+[\"']?((ssh-|ecdsa-|sk-)[^\"']*)[\"']?[[:space:]]*$/\\1/p" \
                /mnt/seed/user-data >>"$AK"
            new_hostname=$(yaml_value hostname /mnt/seed/user-data)
        fi
        if [ -z "$new_hostname" ] && [ -f /mnt/seed/meta-data ]; then
            new_hostname=$(yaml_value local-hostname /mnt/seed/meta-data)
        fi
        umount /mnt/seed
        say "read NoCloud seed $seed"
    fi
fi
[ -n "$new_hostname" ] && hostname "$new_hostname"
hostname >/etc/hostname
chmod 600 "$AK"
[ -s "$AK" ] || say "no SSH key given (maqet.ssh_key= or a cidata seed): SSH logins will fail"

# A fresh host key at every boot, generated here; its public half is printed below exactly like
# cloud-init's cc_keys_to_console prints host keys.
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key 2>/dev/null |
    grep '^ssh-ed25519 ' >/etc/ssh/ssh_host_ed25519_key.pub
dropbear -F -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key 2>>/var/log/dropbear.log &

# qemu-ga on the virtio port named org.qemu.guest_agent.0, when QEMU has one. The driver adds
# ports asynchronously after it loaded: wait (bounded) for them when a virtio console exists.
if grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null; then
    tries=0
    while ! ls /sys/class/virtio-ports/* >/dev/null 2>&1 && [ "$tries" -lt 200 ]; do
        tries=$((tries + 1)); usleep 10000
    done
fi
for port in /sys/class/virtio-ports/*; do
    [ "$(cat "$port/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    mkdir -p /dev/virtio-ports /run/qemu-ga
    ln -sf "../${port##*/}" /dev/virtio-ports/org.qemu.guest_agent.0
    (
        while :; do
            qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 \
                -t /run/qemu-ga -l /var/log/qemu-ga.log
            sleep 1
        done
    ) &
done

# Ready means dropbear listens on port 22 (a forwarded connection that slirp accepts earlier
# would be reset).
tries=0
until awk '$2 ~ /:0016$/ && $4 == "0A" { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 1000 ]; then say "dropbear does not listen on port 22"; break; fi
    usleep 10000
done
echo "-----BEGIN SSH HOST KEY KEYS-----"
cat /etc/ssh/ssh_host_ed25519_key.pub
echo "-----END SSH HOST KEY KEYS-----"
echo @MARKER@

# A shell on the serial console, forever (PID 1 must never exit).
while :; do
    setsid cttyhack sh
    usleep 100000
done
EOF
)
INIT=${INIT//@BOOT_INSMODS@/$BOOT_INSMODS}
INIT=${INIT//@SEED_INSMODS@/${SEED_INSMODS//$'\n'/$'\n'    }}
INIT=${INIT//@MARKER@/$MARKER}
printf '%s\n' "$INIT" >"$R/init"
chmod 755 "$R/init"

# --- pack -----------------------------------------------------------------------------------
pack_boot_files "$R" 6
{
    printf 'package=%s\n' "${INFO[@]}"
    echo "append=$APPEND"
    echo "marker=$MARKER"
    echo "boot_modules=${BOOT_ORDER[*]}"
    echo "seed_modules=${SEED_ORDER[*]}"
} >"$OUT/build-info"
publish
