"""A reduce that takes a while for one key (MIT early_exit)."""

import time


def map_batch(records):
    for (path, _), _ in records:
        yield path, 1


def reduce(key, values):
    if key.endswith("tom_sawyer.txt"):
        time.sleep(3)
    yield key, sum(values)
