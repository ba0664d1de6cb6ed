#!/usr/bin/env bash
# The main job: set up, then drive the demo VM (the tests' small SSH guest, under TCG) in
# a throw-away MAQET_HOME: first from an Ansible playbook (create, start and wait for SSH
# in one task, the serial console, a command inside the guest over SSH through the maqet
# inventory with host key checking on, a live snapshot, stop), then the same VM from the
# CLI and an ad-hoc Ansible command through the inventory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

repo=$PWD
export PATH="$repo/.venv/bin:$PATH" LC_ALL=C.UTF-8
export MAQET_HOME="${MAQET_HOME:-$(mktemp -d /tmp/maqet-demo.XXXXXX)}"
export ANSIBLE_COLLECTIONS_PATH="$repo" ANSIBLE_HOME="$MAQET_HOME/ansible" \
    ANSIBLE_LOCAL_TEMP="$MAQET_HOME/ansible-tmp" ANSIBLE_REMOTE_TMP="$MAQET_HOME/ansible-tmp" \
    ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_FAILED=true
guest_dir=$(bash tests/guest/build-ssh-guest.sh | tail -n 1)
key="$MAQET_HOME/id_demo"  # a throw-away key: root's in the guest (cloud-init puts it there)
[ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C maqet-demo -f "$key"
cleanup() { maqet rm demo --force --purge --missing-ok >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== MAQET_HOME=$MAQET_HOME"
echo "== 1. a playbook: create + start + wait for SSH in one task, the serial console,"
echo "==    a command inside the guest over SSH (host key checked), live snapshot, stop"
ansible-playbook -i docs/examples/demo.maqet.yml docs/examples/demo-playbook.yml \
    -e kernel="$guest_dir/vmlinuz" -e initrd="$guest_dir/initrd.gz" -e private_key="$key"

echo "== 2. the CLI, and Ansible through the dynamic inventory"
set -x
maqet start demo
maqet wait demo --ssh --timeout 120
maqet ls
maqet status demo
ANSIBLE_SSH_ARGS="-o ControlMaster=no" ansible maqet_tag_demo -i docs/examples/demo.maqet.yml \
    -e ansible_python_interpreter=/usr/bin/python3 -m ansible.builtin.command -a 'uname -sr'
ansible-inventory -i docs/examples/demo.maqet.yml --graph
maqet snapshot demo list
maqet screendump demo "$MAQET_HOME/demo.png"
maqet stop demo
maqet rm demo --purge
