# Shared by build-ssh-guest.sh and build-cloud-image.sh (sourced, not run).
#
# Before sourcing, set LOG_TAG (prefix of log lines). Provides: log/die, apt helpers that
# fetch .deb files into a shared download cache, the cloud kernel's package name, and module
# resolution with modules.dep (dependencies first). build-guest.sh keeps its own copy of the
# module code on purpose: editing that script changes its recipe hash, which rebuilds the
# busybox guest in every checkout that shares the cache.
#
# Everything here writes progress to stderr; stdout is left to the caller.

META_PKG=linux-image-cloud-amd64
CACHE_ROOT=${MAQET_GUEST_CACHE:-$HOME/.cache/maqet-test-guest}
# Downloaded .deb files, shared by the guests built here and kept between builds, so editing a
# recipe does not download 40 MB again. Files are named like apt names them (name_version_arch),
# so a new version is a new file; files unused for 30 days are removed.
DEB_CACHE=$CACHE_ROOT/debs

log() { echo "$LOG_TAG: $*" >&2; }
die() { log "error: $*"; exit 1; }

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

# copy_modules DEST NAME...: uncompressed NAME.ko files into DEST; prints the insmod lines.
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
        echo "insmod /lib/modules/$n.ko || echo '$LOG_TAG: insmod $n failed'"
    done
}

# pack_initramfs TREE OUT.gz [LEVEL]: a gzip newc cpio of TREE, owned by root, in a
# reproducible order. LEVEL defaults to 9; for the ssh guest (50 MB) -6 takes 2 s instead of
# 7.5 s and is 0.7% larger.
pack_initramfs() {
    local cpio=(cpio --quiet) gz=(gzip)
    command -v cpio >/dev/null || cpio=("$BB" cpio)
    command -v gzip >/dev/null || gz=("$BB" gzip)
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | "${cpio[@]}" -o -H newc -R 0:0) |
        "${gz[@]}" "-${3:-9}" -n >"$2"
}
