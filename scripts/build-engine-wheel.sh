#!/usr/bin/env bash
# Build the maqet engine's wheel from this working tree into the maqet.vm collection, where
# the maqet.vm.hypervisor role installs it from (roles/hypervisor/files/). The wheel is
# not in git (.gitignore): run this before `ansible-galaxy collection build` (scripts/
# ansible-checks.sh does) and before using the role from the working tree (the tests do).
#
#   scripts/build-engine-wheel.sh [--wheelhouse DIR]
#
# --wheelhouse DIR: also put wheels of the engine's dependencies (from PyPI) into DIR, for
#   hypervisors without an index (the role's maqet_hypervisor_wheelhouse). Skipped when DIR
#   already holds them for the same requirements (DIR/.requirements), so it runs offline then.
#
# Builds with Debian's pip, setuptools and wheel (python3-pip depends on the last two), in a
# copy of the sources (no build/ or *.egg-info left here, nothing stale from an earlier
# build), without build isolation: nothing is downloaded to build. Prints the wheel's path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
files="$repo/ansible_collections/maqet/vm/roles/hypervisor/files"
python=${MAQET_BUILD_PYTHON:-/usr/bin/python3}
# Same sources, same bytes: the role then sees an unchanged wheel after a rebuild.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}

wheelhouse=
while [ $# -gt 0 ]; do
    case $1 in
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a directory}; shift 2 ;;
        *) echo "usage: $0 [--wheelhouse DIR]" >&2; exit 2 ;;
    esac
done
if ! { "$python" -c 'import setuptools, wheel' && "$python" -m pip --version; } >/dev/null 2>&1; then
    echo "build-engine-wheel: $python lacks pip, setuptools or wheel: apt-get install python3-pip" >&2
    exit 1
fi

scratch=$(mktemp -d /tmp/maqet-wheel.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/maqet_engine" "$scratch/src/"
find "$scratch/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$scratch/dist" "$scratch/src" >"$scratch/build.log" 2>&1 \
    || { cat "$scratch/build.log" >&2; exit 1; }
built=$(ls "$scratch"/dist/maqet-*.whl)

mkdir -p "$files"
# One wheel only: the role refuses a directory with two.
find "$files" -maxdepth 1 -name 'maqet-*.whl' ! -name "$(basename "$built")" -delete
if ! cmp -s "$built" "$files/$(basename "$built")"; then
    cp "$built" "$files/.$(basename "$built").tmp"
    mv "$files/.$(basename "$built").tmp" "$files/$(basename "$built")"
fi
wheel="$files/$(basename "$built")"

if [ -n "$wheelhouse" ]; then
    requirements=$("$python" - "$wheel" <<'PY'
import email, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(whl.read(name))
print("\n".join(sorted(r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r)))
PY
)
    mkdir -p "$wheelhouse"
    if [ "$(cat "$wheelhouse/.requirements" 2>/dev/null)" != "$requirements" ]; then
        # shellcheck disable=SC2086  # one requirement per line, none with blanks
        (IFS=$'\n'; "$python" -m pip download --quiet --disable-pip-version-check \
            --only-binary=:all: --dest "$wheelhouse" $requirements)
        printf '%s\n' "$requirements" >"$wheelhouse/.requirements"
    fi
fi
echo "$wheel"
