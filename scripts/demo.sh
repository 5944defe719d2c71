#!/usr/bin/env bash
# Install p2pmr into .venv and run word count over the bundled Gutenberg
# texts on a local swarm of three peer processes. Extra arguments go to
# `p2pmr run` (e.g. --local-peers 5 --reducers 8).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv ""
.venv/bin/p2pmr run examples/wordcount.py --input examples/data/gutenberg \
    --reducers 4 --local-peers 3 --repo .p2pmr-demo --output demo-output "$@"
echo "The ten most frequent words:" >&2
# head closes the pipe early; that SIGPIPE to sort is not a failure.
sort -t$'\t' -k2,2nr demo-output/part-* | head -10 >&2 || true
