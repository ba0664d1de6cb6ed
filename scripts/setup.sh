#!/usr/bin/env bash
# Install everything maqet needs on a Debian 12 machine, as root: QEMU from apt,
# a virtualenv with maqet and its extras in .venv, and (for tests and the demo)
# the test guests (tests/guest/README.md). Safe to run again: each step is skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

want_guest=1
[ "${1:-}" = "--no-guest" ] && want_guest=0

# openssh-server, openssh-client and iproute2: the multi-host tests' namespaces, each
# running its own sshd (tests/support/netns.py).
apt_packages=(qemu-system-x86 qemu-utils cpio python3-venv python3-pip ca-certificates
              openssh-server openssh-client iproute2)
# The ssh guest and cloud image tests: ssh/scp/sftp/ssh-keygen, NoCloud seeds (iso9660 and
# vfat), and building the cloud image (mmdebstrap, mkfs.ext4 -d).
# xorriso: a second, independent ISO reader for the seed tests (tests/integration/cloudinit).
apt_packages+=(genisoimage dosfstools mtools mmdebstrap e2fsprogs xorriso)
# prometheus: a real Prometheus server scrapes `maqet metrics --listen` in
# tests/integration/test_observability.py (run by the test on loopback, never as a service).
apt_packages+=(prometheus)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${missing[*]} (run with sudo)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
        # Wanted only for the binary the tests run in their own namespaces: keep the
        # package's service from starting, now (postinst) and at boot. Debian's init
        # script and ssh.service both honour this file; /usr/sbin/sshd run directly
        # does not look at it.
        mkdir -p /etc/ssh
        touch /etc/ssh/sshd_not_to_be_run
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        # Only its binary is wanted: the tests run their own, on loopback, with a temp
        # storage path. The package's service would scrape and listen on :9090.
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# Root's QEMU drops to this user after start-up (-runas); maqet refuses to run QEMU
# as root without it (docs/security.md).
if [ "$(id -u)" -eq 0 ] && ! getent passwd maqet-qemu >/dev/null; then
    echo "setup: creating the system user maqet-qemu"
    useradd --system --no-create-home --shell /usr/sbin/nologin maqet-qemu
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.maqet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing maqet into .venv"
    # compat mode: a plain .pth path entry; the default editable finder costs
    # ~13 ms at every start of the CLI.
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,ansible]' \
        --config-settings editable_mode=compat
    touch "$stamp"
fi
# Bytecode for the CLI's start-up time (an editable install does not write it, and
# PYTHONDONTWRITEBYTECODE may forbid Python to do it on the fly).
.venv/bin/python -m compileall -q maqet_engine >/dev/null

# The engine wheel the maqet.vm.hypervisor role installs, and the wheels of its
# dependencies for the multi-host tests' hosts, which reach no package index
# (tests/support/fleet.py); skipped when complete.
bash scripts/build-engine-wheel.sh --wheelhouse "${MAQET_WHEELHOUSE:-$HOME/.cache/maqet-wheelhouse}" >/dev/null

if [ "$want_guest" = 1 ]; then
    # Each build is skipped when its cache is complete (tests/guest/README.md).
    bash tests/guest/build-guest.sh >/dev/null
    bash tests/guest/build-ssh-guest.sh >/dev/null
    if [ "$(id -u)" -eq 0 ]; then
        bash tests/guest/build-cloud-image.sh >/dev/null
    elif ! bash tests/guest/build-cloud-image.sh >/dev/null; then
        # mmdebstrap needs root; test_guest_cloud.py will fail until the image exists.
        echo "setup: could not build the cloud image as non-root (run setup as root)" >&2
    fi
fi
