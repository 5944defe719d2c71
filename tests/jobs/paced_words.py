"""A word count (as examples/wordcount.py) whose map tasks take a while, so
that a job can be watched."""

import os
import re
import time
from collections import Counter

WORD = re.compile(r"[^\W\d_]+")
PACE = float(os.environ.get("P2PMR_TEST_PACE", "0.4"))  # seconds per map task


def map_batch(records):
    time.sleep(PACE)
    counts = Counter()
    for _, line in records:
        counts.update(WORD.findall(line))
    yield from counts.items()


def combine(key, values):
    yield key, sum(values)


def reduce(key, values):
    yield key, sum(values)
