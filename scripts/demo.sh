#!/usr/bin/env bash
# The main job: set up, then drive the demo VM (the tiny test guest, under TCG) in a
# throw-away MAQET_HOME, first from an Ansible playbook (boot, type, live snapshot,
# stop), then the dynamic inventory, then the same VM from the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

repo=$PWD
export PATH="$repo/.venv/bin:$PATH" LC_ALL=C.UTF-8
export MAQET_HOME="${MAQET_HOME:-$(mktemp -d /tmp/maqet-demo.XXXXXX)}"
export ANSIBLE_COLLECTIONS_PATH="$repo" ANSIBLE_HOME="$MAQET_HOME/ansible" \
    ANSIBLE_LOCAL_TEMP="$MAQET_HOME/ansible-tmp" ANSIBLE_REMOTE_TMP="$MAQET_HOME/ansible-tmp" \
    ANSIBLE_LOCALHOST_WARNING=false
guest_dir=$(bash tests/guest/build-guest.sh | tail -n 1)
cleanup() { maqet rm demo --force --purge --missing-ok >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== MAQET_HOME=$MAQET_HOME"
echo "== 1. a playbook: define + start in one task, type, live snapshot, stop"
ansible-playbook docs/examples/demo-playbook.yml \
    -e kernel="$guest_dir/vmlinuz" -e initrd="$guest_dir/initrd.gz"

echo "== 2. the CLI and the dynamic inventory"
set -x
maqet start demo
ANSIBLE_INVENTORY_UNPARSED_FAILED=true ansible-inventory -i docs/examples/demo.maqet.yml --graph
maqet ls
maqet wait demo MAQET-GUEST-READY --timeout 60
maqet type demo 'echo hello from $(uname -r)\n'
maqet wait demo '^hello from [0-9]' --timeout 20
maqet status demo
maqet snapshot demo list
maqet screendump demo "$MAQET_HOME/demo.png"
maqet stop demo
maqet rm demo --purge
