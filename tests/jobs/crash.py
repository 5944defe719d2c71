"""Word count whose map and reduce, a third of the time each, kill their
worker process, sleep a random 0-10 s, or run normally (MIT 6.824 crash.go).

As in the lab, where the crash app's map emits four keys, the roll happens
once per map task and for four keys in reduce, so a reduce task meets it a
handful of times rather than once per word.
"""

import os
import random
import re
import time
from collections import Counter

WORD = re.compile(r"[^\W\d_]+")
MAX_SLEEP = float(os.environ.get("P2PMR_CRASH_MAX_SLEEP", "10"))
ROLL_KEYS = {"the", "and", "of", "to"}


def maybe_crash():
    roll = random.randrange(1000)
    if roll < 330:
        os._exit(1)
    elif roll < 660:
        time.sleep(random.uniform(0, MAX_SLEEP))


def map_batch(records):
    maybe_crash()
    counts = Counter()
    for _, line in records:
        counts.update(WORD.findall(line))
    yield from counts.items()


def reduce(word, counts):
    if word in ROLL_KEYS:
        maybe_crash()
    yield word, sum(counts)
