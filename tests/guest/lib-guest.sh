# Shared by build-guest.sh, build-ssh-guest.sh and build-cloud-image.sh (sourced, not run).
#
# Before sourcing, set LOG_TAG (prefix of log lines) and SELF (the build script's path).
# Provides: log/die, RECIPE (the hash of the build script and this file: editing either
# rebuilds that guest), the cache discipline (lock, reuse a complete build, build in a
# temporary directory, publish atomically), apt helpers that fetch .deb files into a shared
# download cache, the cloud kernel's package name, module resolution with modules.dep
# (dependencies first) and initramfs packing.
#
# Everything here writes progress to stderr; stdout is left to the caller, whose last line
# (printed by finish) is the output directory.

META_PKG=linux-image-cloud-amd64
BUSYBOX_PKG=busybox-static
CACHE_ROOT=${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}
# Downloaded .deb files, shared by the guests built here and kept between builds, so editing a
# recipe does not download 40 MB again. Files are named like apt names them (name_version_arch),
# so a new version is a new file; files unused for 30 days are removed.
DEB_CACHE=$CACHE_ROOT/debs

log() { echo "$LOG_TAG: $*" >&2; }
die() { log "error: $*"; exit 1; }

# parse_options ARG...: --force sets FORCE=true, --help prints the script's header comment. A
# script with more options defines extra_option ARG, which returns 0 for one it took.
parse_options() {
    local arg
    FORCE=false
    for arg in "$@"; do
        case $arg in
            --force) FORCE=true ;;
            -h|--help) awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$SELF"; exit 0 ;;
            *)
                if ! declare -F extra_option >/dev/null || ! extra_option "$arg"; then
                    log "unknown argument: $arg (try --help)"
                    exit 2
                fi ;;
        esac
    done
}

LIB_GUEST=$(readlink -f "${BASH_SOURCE[0]}")
# What a build is stamped with (guest.py computes the same): a build made by another recipe is
# stale and rebuilt.
RECIPE=$(cat "$SELF" "$LIB_GUEST" | sha256sum | cut -d' ' -f1)

# --- the cache of one guest -------------------------------------------------------------------
# Before calling these, set CACHE (this guest's directory: one subdirectory per kernel version
# and a `current` symlink) and OUTPUTS (the files a complete build holds besides `recipe`).

complete() {  # complete DIR: every output present and built by this exact recipe
    local f
    for f in "${OUTPUTS[@]}"; do [[ -s $1/$f ]] || return 1; done
    [[ -f $1/recipe ]] && [[ $(<"$1/recipe") == "$RECIPE" ]]
}

finish() {  # finish KVER: point `current` at it, print the output directory and exit
    ln -sfn "$1" "$CACHE/.current.tmp"
    mv -T "$CACHE/.current.tmp" "$CACHE/current"
    echo "$CACHE/$1"
    exit 0
}

# lock_or_reuse FORCE: take this guest's build lock (held until the script exits) and, unless
# FORCE is true, finish at once with a complete build for the kernel package apt resolves now,
# or without package lists (offline, fresh container) with a complete `current`. Sets KPKG
# (empty when apt resolved none).
lock_or_reuse() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9  # concurrent test workers: one builds, the others then find a complete cache
    KPKG=$(resolve_kernel_pkg || true)
    $1 && return 0
    if [[ -n $KPKG ]]; then
        if complete "$CACHE/${KPKG#linux-image-}"; then finish "${KPKG#linux-image-}"; fi
    elif complete "$CACHE/current"; then
        finish "$(basename "$(readlink -f "$CACHE/current")")"
    fi
    return 0
}

_remove_tree() {  # _remove_tree DIR: unmount what is mounted below DIR, then delete DIR
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$1"
}

# start_build: KPKG (resolved now when lock_or_reuse found none) and KVER, the kernel to build
# for; WORK, a new build directory in CACHE, deleted when the script exits; OUT in it, where the
# build's outputs go. Call under the lock: no other build of this guest runs, so any .build.*
# left is debris of a killed build (mmdebstrap may have left proc/sys mounted in one: unmounted
# before deleting).
start_build() {
    local old
    [[ -n $KPKG ]] || KPKG=$(kernel_pkg)
    KVER=${KPKG#linux-image-}
    for old in "$CACHE"/.build.*; do
        [[ -e $old ]] || continue
        _remove_tree "$old"
    done
    WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap '_remove_tree "$WORK"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM HUP
    OUT=$WORK/out
    mkdir -p "$OUT"
}

# publish [NOTE...]: stamp the finished build in OUT with RECIPE, log its sizes (and NOTE), rename
# it into the cache as KVER and finish.
publish() {
    local f sizes=
    echo "$RECIPE" >"$OUT/recipe"
    for f in "${OUTPUTS[@]}"; do sizes+="${sizes:+, }$f $(du -h "$OUT/$f" | cut -f1)"; done
    log "built $KVER: $sizes${*:+; $*}"
    if [[ -e $CACHE/$KVER ]]; then
        mv -T "$CACHE/$KVER" "$WORK/old"  # stale or forced; removed with $WORK
    fi
    mv -T "$OUT" "$CACHE/$KVER"
    finish "$KVER"
}

APT_UPDATED=false
apt_update() {  # at most once per run; needs root. Returns 1 when already done this run.
    $APT_UPDATED && return 1
    [[ $EUID -eq 0 ]] || die "apt package lists are missing or stale; run 'apt-get update' as root"
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=true
}

APT_OPTS=(-q)
# As root, apt downloads as the sandbox user `_apt`, who cannot write into /root/.cache.
[[ $EUID -eq 0 ]] && APT_OPTS+=(-o APT::Sandbox::User=root)

resolve_kernel_pkg() {  # the versioned package the meta package currently depends on
    apt-cache depends "$META_PKG" 2>/dev/null |
        awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

kernel_pkg() {  # like resolve_kernel_pkg, refreshing empty package lists once
    local pkg
    pkg=$(resolve_kernel_pkg || true)
    if [[ -z $pkg ]]; then
        apt_update || true
        pkg=$(resolve_kernel_pkg || true)
    fi
    [[ -n $pkg ]] || die "cannot resolve $META_PKG to a kernel package (apt-cache depends)"
    echo "$pkg"
}

declare -A DEB  # package name -> its cached .deb (set by fetch_debs)

_fetch_debs_once() {  # _fetch_debs_once PKG...: 0 when every candidate .deb is in DEB_CACHE
    local listing uri name size rest tmp missing=() f
    listing=$(apt-get "${APT_OPTS[@]}" download --print-uris "$@" 2>/dev/null) || return 1
    [[ -n $listing ]] || return 1
    while read -r uri name size rest; do
        f=$DEB_CACHE/$name
        DEB[${name%%_*}]=$f
        if [[ -f $f && $(stat -c %s "$f") == "$size" ]]; then
            touch "$f"  # in use: keep it from the 30-day pruning
        else
            missing+=("${name%%_*}")
        fi
    done <<<"$listing"
    if ((${#missing[@]})); then
        log "downloading ${#missing[@]} package(s): ${missing[*]}"
        tmp=$(mktemp -d "$DEB_CACHE/.dl.XXXXXX")
        if ! (cd "$tmp" && apt-get "${APT_OPTS[@]}" download "${missing[@]}" >&2); then
            rm -rf "$tmp"
            return 1
        fi
        # Each rename is atomic: a concurrent build sees a whole .deb or none.
        for f in "$tmp"/*.deb; do mv -f "$f" "$DEB_CACHE/"; done
        rmdir "$tmp"
    fi
    return 0
}

# fetch_debs PKG...: make sure the candidate .debs of PKG... are in DEB_CACHE; afterwards
# ${DEB[PKG]} is the path of each.
fetch_debs() {
    local pkg
    mkdir -p "$DEB_CACHE"
    find "$DEB_CACHE" -maxdepth 1 -name '.dl.*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
    find "$DEB_CACHE" -maxdepth 1 -name '*.deb' -mtime +30 -delete 2>/dev/null || true
    if ! _fetch_debs_once "$@"; then
        # Stale lists point at versions the mirror no longer has: refresh once and retry.
        apt_update || die "apt-get download failed for: $*"
        _fetch_debs_once "$@" || die "apt-get download failed for: $*"
    fi
    for pkg in "$@"; do
        [[ -f ${DEB[$pkg]:-} ]] || die "no .deb for $pkg after download"
    done
}

# unpack_busybox DIR: unpack the fetched busybox-static into DIR; sets BB, the busybox binary.
unpack_busybox() {
    dpkg-deb -x "${DEB[$BUSYBOX_PKG]}" "$1"
    BB=$1/bin/busybox
    [[ -x $BB ]] || die "no bin/busybox in $BUSYBOX_PKG"
}

# unpack_kernel: unpack the fetched kernel package KPKG into WORK/kernel, set VMLINUZ and index
# its modules (modules_index: needs BB).
unpack_kernel() {
    dpkg-deb -x "${DEB[$KPKG]}" "$WORK/kernel"
    VMLINUZ=$WORK/kernel/boot/vmlinuz-$KVER
    [[ -f $VMLINUZ ]] || die "no boot/vmlinuz-$KVER in $KPKG"
    modules_index "$WORK/kernel" "$KVER"
}

# --- kernel modules ---------------------------------------------------------------------------
# modules_index KERNEL_TREE KVER: set MODDIR and read modules.dep/modules.builtin of the
# unpacked kernel package (generating modules.dep with busybox depmod: the package ships none).
declare -A MODPATH MODDEPS BUILTIN SEEN
modname() { local n=${1##*/}; n=${n%%.ko*}; echo "${n//-/_}"; }
modules_index() {
    local tree=$1 kver=$2 base line rel n
    MODBASE=
    for base in "$tree" "$tree/usr"; do
        [[ -d $base/lib/modules/$kver ]] && MODBASE=$base && break
    done
    [[ -n $MODBASE ]] || die "no lib/modules/$kver in the kernel package"
    MODDIR=$MODBASE/lib/modules/$kver
    "$BB" depmod -b "$MODBASE" "$kver"
    [[ -s $MODDIR/modules.dep ]] || die "depmod produced no modules.dep"
    while IFS= read -r line; do
        rel=${line%%:*}
        n=$(modname "$rel")
        MODPATH[$n]=$rel
        MODDEPS[$n]=${line#*:}
    done <"$MODDIR/modules.dep"
    while IFS= read -r rel; do BUILTIN[$(modname "$rel")]=1; done <"$MODDIR/modules.builtin"
}

_visit() {  # depth-first: dependencies first, each module once per run
    local n=$1 d
    [[ -n ${SEEN[$n]:-} ]] && return 0
    SEEN[$n]=1
    for d in ${MODDEPS[$n]}; do _visit "$(modname "$d")"; done
    ORDER+=("$n")
}

# module_order REQUIRED... [-- OPTIONAL...]: set ORDER to the modules to load, in load order,
# leaving out built-in ones and those an earlier call already ordered.
module_order() {
    local m optional=false
    ORDER=()
    for m in "$@"; do
        if [[ $m == -- ]]; then optional=true; continue; fi
        [[ -n ${BUILTIN[$m]:-} ]] && continue
        if [[ -z ${MODPATH[$m]:-} ]]; then
            $optional || die "the kernel has no module $m"
            log "module $m not in the kernel, skipped"
            continue
        fi
        _visit "$m"
    done
}

# copy_modules DEST NAME...: uncompressed NAME.ko files into DEST; prints the insmod lines (a
# failed insmod says so on the console, tagged INSMOD_TAG, by default LOG_TAG).
copy_modules() {
    local dest=$1 n src
    shift
    mkdir -p "$dest"
    for n in "$@"; do
        src=$MODDIR/${MODPATH[$n]}
        case $src in
            *.ko) cp "$src" "$dest/$n.ko" ;;
            *.ko.xz) "$BB" xz -dc "$src" >"$dest/$n.ko" ;;
            *.ko.gz) "$BB" gzip -dc "$src" >"$dest/$n.ko" ;;
            *) die "cannot unpack module $src" ;;
        esac
        echo "insmod /lib/modules/$n.ko || echo '${INSMOD_TAG:-$LOG_TAG}: insmod $n failed'"
    done
}

# pack_boot_files TREE [LEVEL]: OUT/initrd.gz, a gzip newc cpio of TREE owned by root in a
# reproducible order, and OUT/vmlinuz. LEVEL defaults to 9; for the ssh guest (50 MB) -6 takes
# 2 s instead of 7.5 s and is 0.7% larger.
pack_boot_files() {
    local cpio=(cpio --quiet) gz=(gzip)
    command -v cpio >/dev/null || cpio=("$BB" cpio)
    command -v gzip >/dev/null || gz=("$BB" gzip)
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | "${cpio[@]}" -o -H newc -R 0:0) |
        "${gz[@]}" "-${2:-9}" -n >"$OUT/initrd.gz"
    cp "$VMLINUZ" "$OUT/vmlinuz"
}
