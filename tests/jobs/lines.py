"""Keys every record by its whole line, with no combiner: a shuffle as large
as the input. Each map task first sleeps P2PMR_LINES_SLEEP seconds, so a
test can act while the map phase runs."""

import os
import time

SLEEP = float(os.environ.get("P2PMR_LINES_SLEEP", "0"))


def map_batch(records):
    time.sleep(SLEEP)
    for _, line in records:
        yield line, 1


def reduce(key, values):
    yield key, sum(values)
