#!/usr/bin/env bash
# Build (or reuse) the "cloud image": a Debian 12 root filesystem made by mmdebstrap (minbase +
# systemd, OpenSSH, python3, qemu-guest-agent, cloud-init, sudo), packed with `mkfs.ext4 -d`
# (no loop mounts) and converted to qcow2, plus the cloud kernel and a small busybox initramfs
# that loads the virtio modules and switch_roots to the disk. cloud-init is configured for the
# NoCloud datasource and trimmed so that a TCG boot finishes in under a minute. See README.md
# ("The cloud image").
#
# Output: ${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}/cloud/<kernel-version>/
#   {vmlinuz,initrd.gz,disk.qcow2,build-info,packages.txt,recipe} and a `current` symlink next
# to it. The output directory is the last line on stdout; everything else goes to stderr. A
# complete cache made by the current recipe (this script + lib-guest.sh) is reused untouched;
# new Debian package versions alone do not rebuild it (use --force). Builds happen in a
# temporary directory and are renamed into place under an flock.
#
# Needs root (mmdebstrap mounts proc/sys in the target; ownership must be real for mkfs.ext4 -d),
# mmdebstrap, mkfs.ext4 (e2fsprogs) and qemu-img.
#
# Usage: build-cloud-image.sh [--force]
#
# Boot: -kernel vmlinuz -initrd initrd.gz -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet
#   cryptomgr.notests" with a qcow2 overlay of disk.qcow2 as the first virtio disk and a NoCloud
#   seed (label cidata) as another virtio disk.
set -euo pipefail

LOG_TAG=build-cloud-image
SELF=$(readlink -f "${BASH_SOURCE[0]}")
LIB=$(dirname "$SELF")/lib-guest.sh
# shellcheck source=lib-guest.sh
source "$LIB"

SUITE=bookworm
INCLUDE=systemd-sysv,udev,dbus,kmod,openssh-server,python3,qemu-guest-agent,cloud-init,sudo,iproute2
APPEND="console=ttyS0 root=/dev/vda rw panic=-1 quiet cryptomgr.notests"
IMAGE_SIZE=2G  # virtual size; qcow2 stores only what mkfs.ext4 wrote (cloud-init grows the fs
               # when an overlay is created larger)
# Loaded by the initramfs so that the kernel sees the root disk; everything else is loaded by
# udev from the image's own /lib/modules (a copy of the same kernel package's modules).
INITRD_MODULES=(virtio_pci virtio_blk)

CACHE=$CACHE_ROOT/cloud
OUTPUTS=(vmlinuz initrd.gz disk.qcow2)

parse_options "$@"

lock_or_reuse "$FORCE"
[[ $EUID -eq 0 ]] || die "building the cloud image needs root (mmdebstrap); run as root"
for tool in mmdebstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install mmdebstrap e2fsprogs qemu-utils)"
done
start_build

fetch_debs "$KPKG" "$BUSYBOX_PKG"
unpack_busybox "$WORK/busybox"
unpack_kernel

# --- root filesystem ------------------------------------------------------------------------
# The host's own apt sources (its mirror or proxy settings are what works here).
SOURCES=()
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -s $f ]] && grep -q -E '^[[:space:]]*(deb|Types:)' "$f"; then SOURCES=("$f"); break; fi
done
ROOT=$WORK/root
# dpkg's force-unsafe-io (no fsync per file) only while building: 31 s instead of 39 s here.
log "mmdebstrap $SUITE (${SOURCES[*]:-default mirror}): $INCLUDE"
mmdebstrap --quiet --mode=root --format=directory --variant=minbase --include="$INCLUDE" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --setup-hook='echo force-unsafe-io >"$1/etc/dpkg/dpkg.cfg.d/00maqet-build"' \
    --customize-hook='rm -f "$1/etc/dpkg/dpkg.cfg.d/00maqet-build"' \
    "$SUITE" "$ROOT" "${SOURCES[@]}" >&2 || die "mmdebstrap failed"

# The kernel's modules, so that udev in the image loads what the hardware needs (virtio_net,
# virtio_console for qemu-ga, isofs/cdrom for the seed, the ACPI button, ...).
mkdir -p "$ROOT/usr/lib/modules"
cp -a "$MODDIR" "$ROOT/usr/lib/modules/$KVER"
chroot "$ROOT" depmod -a "$KVER"

cat >"$ROOT/etc/cloud/cloud.cfg.d/90-maqet.cfg" <<'EOF'
# maqet test image (tests/guest/build-cloud-image.sh): NoCloud only, and only the modules a
# test VM uses; every cloud-init module costs time under TCG. Left out on purpose: locale
# (locale-gen is slow; Debian's cloud-init reports an error without the locales it wants),
# growpart (the image has no partition table), and the modules for other clouds and tools.
datasource_list: [NoCloud, None]
# Host keys are made per instance (none are in the image); ed25519 only: RSA keygen under
# emulation takes seconds.
ssh_deletekeys: true
ssh_genkeytypes: [ed25519]
growpart: {mode: "off"}
cloud_init_modules:
  - migrator
  - seed_random
  - bootcmd
  - write-files
  - resizefs
  - disk_setup
  - mounts
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - users-groups
  - ssh
cloud_config_modules:
  - set-passwords
  - timezone
  - runcmd
cloud_final_modules:
  - package-update-upgrade-install
  - write-files-deferred
  - scripts-vendor
  - scripts-per-once
  - scripts-per-boot
  - scripts-per-instance
  - scripts-user
  - ssh-authkey-fingerprints
  - keys-to-console
  - final-message
  - power-state-change
EOF

rm -f "$ROOT"/etc/ssh/ssh_host_*  # made per instance by cloud-init's ssh module
# Without cloud-init (booted with cloud-init=disabled) sshd would have no host key at all.
cat >"$ROOT/etc/systemd/system/sshd-keygen.service" <<'EOF'
[Unit]
Description=Generate an SSH host key when none exists (cloud-init normally makes it)
After=cloud-init.service
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
EOF
chroot "$ROOT" systemctl enable -q sshd-keygen.service
# cloud-init writes a .network file for systemd-networkd (no ifupdown/netplan here). Booted
# with cloud-init=disabled nothing would configure the NIC: this fallback (sorted after
# cloud-init's 10-cloud-init-*.network, so only used when none matches) runs DHCP.
chroot "$ROOT" systemctl enable -q systemd-networkd.service
cat >"$ROOT/etc/systemd/network/99-maqet-fallback.network" <<'EOF'
[Match]
Type=ether

[Network]
DHCP=yes
EOF
# e2scrub_reap checks lvm snapshots: 3 s under TCG for nothing.
chroot "$ROOT" systemctl mask -q e2scrub_reap.service
echo maqet-cloud >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
echo 'LABEL=root / ext4 defaults 0 0' >"$ROOT/etc/fstab"
rm -f "$ROOT/etc/resolv.conf"  # the host's; networkd/DHCP provide one at boot
dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f '${Package} ${Version}\n' >"$WORK/packages.txt"

# --- disk image -----------------------------------------------------------------------------
log "mkfs.ext4 -d ($(du -sh --one-file-system "$ROOT" | cut -f1) of files)"
mkfs.ext4 -q -F -L root -d "$ROOT" "$WORK/disk.raw" "$IMAGE_SIZE" >&2
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$OUT/disk.qcow2"
rm -f "$WORK/disk.raw"
chmod 444 "$OUT/disk.qcow2"  # a base image: VMs boot overlays on it

# --- initramfs: load virtio, mount the root disk, switch_root to systemd --------------------
R=$WORK/initramfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,newroot,lib/modules}
cp "$BB" "$R/bin/busybox"
module_order "${INITRD_MODULES[@]}"
INSMODS=$(copy_modules "$R/lib/modules" "${ORDER[@]}")
INIT=$(cat <<'EOF'
#!/bin/busybox sh
# maqet cloud image initramfs /init (generated by tests/guest/build-cloud-image.sh)
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "maqet-initramfs: $*"; }

@INSMODS@

root=/dev/vda mode=rw init=/sbin/init fstype=ext4
set -f
for arg in $(cat /proc/cmdline); do
    case $arg in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        init=*) init=${arg#init=} ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
    esac
done
set +f
case $root in LABEL=*|UUID=*) root=$(findfs "$root") || root= ;; esac
tries=0
while [ -z "$root" ] || [ ! -b "$root" ]; do
    tries=$((tries + 1))
    # The exit makes the kernel panic; with panic=-1 and -no-reboot QEMU then exits.
    [ "$tries" -ge 1000 ] && { say "no root device ($root)"; exit 1; }
    usleep 10000
done
mount -t "$fstype" -o "$mode" "$root" /newroot || { say "cannot mount $root"; exit 1; }
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
EOF
)
INIT=${INIT//@INSMODS@/$INSMODS}
printf '%s\n' "$INIT" >"$R/init"
chmod 755 "$R/init"
pack_boot_files "$R"
mv "$WORK/packages.txt" "$OUT/packages.txt"
{
    echo "kernel_package=$KPKG $(dpkg-deb -f "${DEB[$KPKG]}" Version)"
    echo "suite=$SUITE"
    echo "include=$INCLUDE"
    echo "append=$APPEND"
    echo "initrd_modules=${ORDER[*]}"
    echo "image=disk.qcow2 qcow2 $IMAGE_SIZE"
} >"$OUT/build-info"

# --- publish atomically ---------------------------------------------------------------------
rm -rf --one-file-system "$ROOT"
publish
