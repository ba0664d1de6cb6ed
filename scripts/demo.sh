#!/usr/bin/env bash
# The main job: set up, then define the demo VM (the tiny test guest) in a
# throw-away MAQET_HOME and show it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export PATH="$PWD/.venv/bin:$PATH"
export MAQET_HOME="${MAQET_HOME:-$(mktemp -d /tmp/maqet-demo.XXXXXX)}"
guest_dir=$(bash tests/guest/build-guest.sh | tail -n 1)

echo "== MAQET_HOME=$MAQET_HOME"
set -x
maqet apply -c docs/examples/demo.yml --set kernel="$guest_dir/vmlinuz" \
    --set initrd="$guest_dir/initrd.gz"
maqet ls
maqet show demo
maqet show demo --argv
