#!/usr/bin/env bash
# The test suite, as CI runs it: set up (apt, venv, guest), lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export LC_ALL=C.UTF-8
export PATH="$PWD/.venv/bin:$PATH"
scratch=$(mktemp -d /tmp/maqet-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export ANSIBLE_HOME="$scratch/ansible" ANSIBLE_LOCAL_TEMP="$scratch/ansible-tmp" \
    ANSIBLE_REMOTE_TMP="$scratch/ansible-remote"

echo "== ruff"
ruff check .

echo "== ansible collection: sanity, units, built artifact"
bash scripts/ansible-checks.sh

echo "== pytest"
pytest -p no:cacheprovider tests "$@"
