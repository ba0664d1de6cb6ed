#!/usr/bin/env bash
# Quality gates of the maqet.vm collection (issue 5), runnable on their own and from
# scripts/test.sh:
#   1. ansible-test sanity, locally and offline (no containers; pip bootstrapped from
#      a cached wheel instead of ansible-test's get-pip download, see
#      ../shared/ANSIBLE-TOOLCHAIN.md)
#   2. the collection's unit tests (ansible-test units: a pytest run of their own,
#      never mixed with tests/ because basenames clash)
#   3. the artifact: build the engine wheel into the hypervisor role
#      (scripts/build-engine-wheel.sh), build the tarball, check the wheel is in it,
#      install it into a temp path, and render every module, the inventory and
#      connection plugins and the roles with ansible-doc from there
#   4. ansible-lint's production profile, on a copy of the collection
# Exits non-zero when any gate fails. Idempotent: everything it writes is in a temp
# dir, apart from the pip bootstrap cache under ~/.ansible/test/cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
collection="$repo/ansible_collections/maqet/vm"
venv="$repo/.venv"
[ -x "$venv/bin/ansible-test" ] && export PATH="$venv/bin:$PATH"
python=$(command -v python3)
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

export LC_ALL=C.UTF-8
scratch=$(mktemp -d /tmp/maqet-ansible-checks.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export ANSIBLE_HOME="$scratch/ansible" ANSIBLE_LOCAL_TEMP="$scratch/ansible-tmp" \
    ANSIBLE_REMOTE_TMP="$scratch/ansible-remote"
unset ANSIBLE_COLLECTIONS_PATH

failed=()
gate() {  # gate NAME COMMAND...: run one gate, remember a failure, go on
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
        echo "== $name: ok"
    else
        echo "== $name: FAILED" >&2
        failed+=("$name")
    fi
}

# --- ansible-test's pip bootstrap, offline --------------------------------------------
# ansible-test sanity makes venvs and bootstraps pip with a get-pip script that it
# downloads from a host that is not reachable here, unless the script is cached at
# ~/.ansible/test/cache/get_pip_<version>.py. We cache a small one that installs pip
# from the matching wheel (fetched once from PyPI with pip download).
prepare_pip_bootstrap() {
    local pip_version cache script
    pip_version=$("$python" - <<'PY'
import importlib.util, pathlib, re
spec = importlib.util.find_spec("ansible_test")
source = pathlib.Path(spec.submodule_search_locations[0], "_internal", "python_requirements.py")
print(re.search(r"pip='([^']+)'", source.read_text()).group(1))
PY
)
    cache="$HOME/.ansible/test/cache"
    script="$cache/get_pip_${pip_version//./_}.py"
    mkdir -p "$cache"
    if ! ls "$cache"/pip-"$pip_version"-*.whl >/dev/null 2>&1; then
        "$python" -m pip download --quiet --no-deps --only-binary=:all: \
            -d "$cache" "pip==$pip_version"
    fi
    cat >"$script.tmp" <<PY
# Written by maqet's scripts/ansible-checks.sh: ansible-test's get-pip, offline.
# Installs pip $pip_version from the wheel cached next to this file.
import glob, os, sys

here = os.path.dirname(os.path.abspath(__file__))
wheel = sorted(glob.glob(os.path.join(here, "pip-$pip_version-*.whl")))[-1]
sys.path.insert(0, wheel)
from pip._internal.cli.main import main  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
args = [wheel if a == "pip==$pip_version" else a for a in args]
sys.exit(main(["install", "--no-cache-dir"] + args))
PY
    mv "$script.tmp" "$script"
}

sanity() {
    prepare_pip_bootstrap
    (cd "$collection" && ansible-test sanity --local --python "$pyver" --color no)
}

units() {
    (cd "$collection" && ansible-test units --local --python "$pyver" --color no)
}

artifact() {
    local tarball wheel
    # The engine wheel the hypervisor role installs: built from this tree into the
    # collection (not in git), so the artifact carries the engine it was tested with.
    wheel=$(bash "$repo/scripts/build-engine-wheel.sh")
    ansible-galaxy collection build "$collection" --output-path "$scratch/dist" --force
    tarball=$(ls "$scratch"/dist/maqet-vm-*.tar.gz)
    # (no grep -q on the pipe: its early exit would fail tar under pipefail)
    if ! tar -tzf "$tarball" | grep -x "roles/hypervisor/files/$(basename "$wheel")" >/dev/null; then
        echo "the artifact lacks roles/hypervisor/files/$(basename "$wheel")" >&2
        return 1
    fi
    ansible-galaxy collection install "$tarball" -p "$scratch/collections" --force
    # Check every plugin the working tree has renders from the installed artifact.
    ANSIBLE_COLLECTIONS_PATH="$scratch/collections" "$python" - "$collection" <<'PY'
import json, pathlib, subprocess, sys

collection = pathlib.Path(sys.argv[1])
wanted = [("module", p.stem) for p in sorted((collection / "plugins/modules").glob("*.py"))
          if not p.stem.startswith("_")]
wanted += [("inventory", p.stem) for p in sorted((collection / "plugins/inventory").glob("*.py"))
           if not p.stem.startswith("_")]
wanted += [("connection", p.stem)
           for p in sorted((collection / "plugins/connection").glob("*.py"))
           if not p.stem.startswith("_")]
wanted += [("role", p.name) for p in sorted((collection / "roles").iterdir())
           if (p / "meta" / "argument_specs.yml").exists()]
bad = []
for kind, name in wanted:
    fqcn = f"maqet.vm.{name}"
    proc = subprocess.run(["ansible-doc", "-t", kind, "--json", fqcn],
                          capture_output=True, text=True)
    doc = {}
    if proc.returncode == 0:
        data = json.loads(proc.stdout or "{}").get(fqcn) or {}
        doc = (data.get("entry_points") or {}).get("main") if kind == "role" else data.get("doc")
        doc = doc or {}
    text = subprocess.run(["ansible-doc", "-t", kind, fqcn], capture_output=True, text=True)
    if not doc.get("short_description") or text.returncode != 0 or fqcn not in text.stdout:
        bad.append(fqcn)
        print(f"ansible-doc cannot render {kind} {fqcn}: {proc.stderr.strip()}",
              file=sys.stderr)
    else:
        print(f"ansible-doc {kind} {fqcn}: ok")
sys.exit(1 if bad else 0)
PY
}

lint() {
    # ansible-lint's production profile (what Galaxy's import expects: changelog, meta,
    # docs). It writes a .ansible cache into the project it lints: lint a copy.
    cp -a "$collection" "$scratch/lint"
    rm -rf "$scratch/lint/tests/output"
    (cd "$scratch/lint" && ansible-lint --profile production --offline --nocolor .)
}

gate "ansible-test sanity" sanity
gate "ansible-lint production profile" lint
gate "collection unit tests" units
gate "collection build/install/ansible-doc" artifact

if [ ${#failed[@]} -gt 0 ]; then
    echo "ansible checks failed: ${failed[*]}" >&2
    exit 1
fi
echo "ansible checks: all passed"
