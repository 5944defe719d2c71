"""Kills its worker process the first time any map runs (marker file)."""

import os

MARKER = os.environ.get("P2PMR_TEST_MARKER", "/nonexistent")


def map(key, line):
    if not os.path.exists(MARKER):
        with open(MARKER, "w") as handle:
            handle.write(str(os.getpid()))
        os._exit(3)
    yield "lines", 1


def reduce(key, values):
    yield key, sum(values)
