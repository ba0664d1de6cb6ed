#!/usr/bin/env bash
# Build (or reuse) the tiny real guest that maqet's integration tests and the README demo boot:
# the Debian cloud kernel plus a busybox initramfs, both taken from Debian packages with
# `apt-get download` + `dpkg-deb -x` (nothing is installed on the host).
#
# Output: ${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}/<kernel-version>/{vmlinuz,initrd.gz}
# and a `current` symlink to that directory. The output directory is the last line on stdout;
# everything else goes to stderr. A complete cache for the current recipe is reused untouched.
# Builds happen in a temporary directory next to the cache and are renamed into place, under
# an flock, so a killed or concurrent build never leaves a half-written cache.
#
# Usage: build-guest.sh [--force] [--with-qemu]
#   --force      rebuild even when the cache is complete
#   --with-qemu  also apt-get install qemu-system-x86 and qemu-utils when missing (CI hosts)
#
# Boot it with: -kernel vmlinuz -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet cryptomgr.notests"
set -euo pipefail

META_PKG=linux-image-cloud-amd64
BUSYBOX_PKG=busybox-static
MARKER=MAQET-GUEST-READY
# Loaded in this order (each after its own dependencies from modules.dep).
REQUIRED_MODULES=(evdev button virtio_pci virtio_blk virtio_console)
# Loaded when the kernel ships them (the 6.1 cloud kernel has no 9p at all).
OPTIONAL_MODULES=(virtio_net 9pnet 9pnet_virtio 9p)

CACHE=${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
# The cache is keyed by kernel version and stamped with this script's hash: editing the recipe
# (modules, /init, ...) invalidates old builds instead of silently reusing them.
RECIPE=$(sha256sum "$SELF" | cut -d' ' -f1)

FORCE=false
WITH_QEMU=false
for arg in "$@"; do
    case $arg in
        --force) FORCE=true ;;
        --with-qemu) WITH_QEMU=true ;;
        -h|--help) sed -n '2,16p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-guest: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

complete() {  # complete DIR: both boot files present and built by this exact recipe
    [[ -s $1/vmlinuz && -s $1/initrd.gz && -f $1/recipe ]] && [[ $(<"$1/recipe") == "$RECIPE" ]]
}

APT_UPDATED=false
apt_update() {  # at most once per run; needs root
    $APT_UPDATED && return 1
    [[ $EUID -eq 0 ]] || die "apt package lists are missing or stale; run 'apt-get update' as root"
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=true
}

APT_OPTS=(-q)
# As root, apt downloads as the sandbox user `_apt`, who cannot write into /root/.cache.
[[ $EUID -eq 0 ]] && APT_OPTS+=(-o APT::Sandbox::User=root)

if $WITH_QEMU; then
    missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v qemu-img >/dev/null || missing+=(qemu-utils)
    if ((${#missing[@]})); then
        [[ $EUID -eq 0 ]] || die "missing ${missing[*]}; install them as root"
        apt_update || true
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2
    fi
fi

resolve_kernel_pkg() {  # the versioned package the meta package currently depends on
    apt-cache depends "$META_PKG" 2>/dev/null |
        awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # concurrent test workers: one builds, the others then find a complete cache

finish() {  # finish KVER: point `current` at it and print the output directory
    ln -sfn "$1" "$CACHE/.current.tmp"
    mv -T "$CACHE/.current.tmp" "$CACHE/current"
    echo "$CACHE/$1"
    exit 0
}

KPKG=$(resolve_kernel_pkg || true)
if ! $FORCE; then
    if [[ -n $KPKG ]]; then
        complete "$CACHE/${KPKG#linux-image-}" && finish "${KPKG#linux-image-}"
    elif complete "$CACHE/current"; then
        # No package lists (offline, fresh container): a complete cache is good enough.
        finish "$(basename "$(readlink -f "$CACHE/current")")"
    fi
fi
if [[ -z $KPKG ]]; then
    apt_update
    KPKG=$(resolve_kernel_pkg) || true
    [[ -n $KPKG ]] || die "cannot resolve $META_PKG to a kernel package (apt-cache depends)"
fi
KVER=${KPKG#linux-image-}

# Under the lock no other build runs: any .build.* left is debris of a killed build.
rm -rf "$CACHE"/.build.*
WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
mkdir -p "$WORK/debs"

log "downloading $KPKG and $BUSYBOX_PKG"
if ! (cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "$KPKG" "$BUSYBOX_PKG" >&2); then
    # Stale lists point at versions the mirror no longer has: refresh once and retry.
    apt_update || die "apt-get download failed"
    KPKG=$(resolve_kernel_pkg) || true
    [[ -n $KPKG ]] || die "cannot resolve $META_PKG to a kernel package (apt-cache depends)"
    KVER=${KPKG#linux-image-}
    if ! $FORCE && complete "$CACHE/$KVER"; then finish "$KVER"; fi
    rm -f "$WORK"/debs/*.deb
    (cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "$KPKG" "$BUSYBOX_PKG" >&2)
fi

kdeb=("$WORK/debs/${KPKG}"_*.deb)
bdeb=("$WORK/debs/${BUSYBOX_PKG}"_*.deb)
dpkg-deb -x "${kdeb[0]}" "$WORK/kernel"
dpkg-deb -x "${bdeb[0]}" "$WORK/busybox"
BB=$WORK/busybox/bin/busybox
[[ -x $BB ]] || die "no bin/busybox in ${bdeb[0]}"
VMLINUZ=$WORK/kernel/boot/vmlinuz-$KVER
[[ -f $VMLINUZ ]] || die "no boot/vmlinuz-$KVER in ${kdeb[0]}"
MODBASE=
for base in "$WORK/kernel" "$WORK/kernel/usr"; do
    [[ -d $base/lib/modules/$KVER ]] && MODBASE=$base && break
done
[[ -n $MODBASE ]] || die "no lib/modules/$KVER in ${kdeb[0]}"
MODDIR=$MODBASE/lib/modules/$KVER

# The package ships no modules.dep (its postinst runs depmod): generate it with busybox depmod.
"$BB" depmod -b "$MODBASE" "$KVER"
[[ -s $MODDIR/modules.dep ]] || die "depmod produced no modules.dep"

declare -A MODPATH MODDEPS
modname() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }
while IFS= read -r line; do
    rel=${line%%:*}
    n=$(modname "$rel")
    MODPATH[$n]=$rel
    MODDEPS[$n]=${line#*:}
done <"$MODDIR/modules.dep"
declare -A BUILTIN
while IFS= read -r rel; do BUILTIN[$(modname "$rel")]=1; done <"$MODDIR/modules.builtin"

declare -A SEEN
ORDER=()
visit() {  # depth-first: dependencies first, each module once
    local n=$1 d
    [[ -n ${SEEN[$n]:-} ]] && return 0
    SEEN[$n]=1
    for d in ${MODDEPS[$n]}; do visit "$(modname "$d")"; done
    ORDER+=("$n")
}
for m in "${REQUIRED_MODULES[@]}"; do
    if [[ -n ${BUILTIN[$m]:-} ]]; then log "module $m is built in"; continue; fi
    [[ -n ${MODPATH[$m]:-} ]] || die "kernel $KVER has no module $m"
    visit "$m"
done
for m in "${OPTIONAL_MODULES[@]}"; do
    if [[ -n ${BUILTIN[$m]:-} ]]; then continue; fi
    if [[ -z ${MODPATH[$m]:-} ]]; then log "module $m not in kernel $KVER, skipped"; continue; fi
    visit "$m"
done

# --- initramfs tree -------------------------------------------------------------------------
R=$WORK/initramfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,var/log,lib/modules} \
    "$R/etc/acpi/PWRF"
ln -s ../run "$R/var/run"
cp "$BB" "$R/bin/busybox"

INSMODS=
for n in "${ORDER[@]}"; do
    src=$MODDIR/${MODPATH[$n]}
    case $src in
        *.ko) cp "$src" "$R/lib/modules/$n.ko" ;;
        *.ko.xz) "$BB" xz -dc "$src" >"$R/lib/modules/$n.ko" ;;
        *.ko.gz) "$BB" gzip -dc "$src" >"$R/lib/modules/$n.ko" ;;
        *) die "cannot unpack module $src" ;;
    esac
    INSMODS+="insmod /lib/modules/$n.ko || echo 'maqet-guest: insmod $n failed'"$'\n'
done

# ACPI power button (QMP system_powerdown) -> acpid -> this handler -> immediate power off.
cat >"$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/busybox sh
sync
exec /bin/busybox poweroff -f
EOF
chmod 755 "$R/etc/acpi/PWRF/00000080"

cat >"$R/init" <<EOF
#!/bin/busybox sh
# maqet test guest /init (generated by tests/guest/build-guest.sh)
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root PS1='maqet-guest# '
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
hostname maqet-guest

${INSMODS}
# busybox acpid opens /dev/input/event* only after it started; a powerdown sent before that is
# lost. Run it in the foreground (known pid) and wait until it holds every event device open.
acpid -f -l /var/log/acpid.log -p /run/acpid.pid &
acpid_pid=\$!
tries=0
while :; do
    want=0; have=0
    for dev in /dev/input/event*; do [ -e "\$dev" ] && want=\$((want + 1)); done
    for fd in /proc/\$acpid_pid/fd/*; do
        case \$(readlink "\$fd" 2>/dev/null) in /dev/input/event*) have=\$((have + 1)) ;; esac
    done
    [ "\$want" -gt 0 ] && [ "\$have" -ge "\$want" ] && break
    tries=\$((tries + 1))
    if [ "\$tries" -ge 500 ]; then
        echo "maqet-guest: acpid holds \$have of \$want input devices; powerdown may be lost"
        break
    fi
    usleep 10000
done

# The keyboard (QMP send-key: 'maqet keys', 'maqet type') types on tty1. Hold tty1 open from
# here on, so keys sent right after the marker are queued in the tty, not dropped.
command exec 3</dev/tty1 || echo "maqet-guest: no /dev/tty1, so no keyboard shell"

echo ${MARKER}
# A shell that reads the keyboard (tty1) and writes to the serial console, so what is typed
# shows up in the serial log. Its own prompt, so it is not mistaken for the ttyS0 shell's.
if [ -c /dev/tty1 ]; then
    (
        exec 3<&-
        while :; do
            setsid sh -c 'exec env PS1="maqet-tty1# " sh -i </dev/tty1 >/dev/ttyS0 2>&1'
            usleep 100000
        done
    ) &
fi
# A shell on the serial console, forever (PID 1 must never exit).
while :; do
    setsid cttyhack sh
    usleep 100000
done
EOF
chmod 755 "$R/init"

# --- pack -----------------------------------------------------------------------------------
OUT=$WORK/out
mkdir -p "$OUT"
if command -v cpio >/dev/null; then CPIO=(cpio --quiet); else CPIO=("$BB" cpio); fi
if command -v gzip >/dev/null; then GZIP_CMD=(gzip); else GZIP_CMD=("$BB" gzip); fi
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | "${CPIO[@]}" -o -H newc -R 0:0) |
    "${GZIP_CMD[@]}" -9 -n >"$OUT/initrd.gz"
cp "$VMLINUZ" "$OUT/vmlinuz"
printf '%s\n' "${ORDER[@]}" >"$OUT/modules.txt"
{
    echo "kernel_package=$KPKG $(dpkg-deb -f "${kdeb[0]}" Version)"
    echo "busybox_package=$BUSYBOX_PKG $(dpkg-deb -f "${bdeb[0]}" Version)"
    echo "append=console=ttyS0 panic=-1 quiet cryptomgr.notests"
    echo "marker=$MARKER"
} >"$OUT/build-info"
echo "$RECIPE" >"$OUT/recipe"

# --- publish atomically ---------------------------------------------------------------------
if [[ -e $CACHE/$KVER ]]; then
    mv -T "$CACHE/$KVER" "$WORK/old"  # stale or forced; removed with $WORK
fi
mv -T "$OUT" "$CACHE/$KVER"
log "built $KVER: $(du -h "$CACHE/$KVER/vmlinuz" | cut -f1) kernel," \
    "$(du -h "$CACHE/$KVER/initrd.gz" | cut -f1) initramfs, modules: ${ORDER[*]}"
finish "$KVER"
