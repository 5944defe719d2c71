"""Records every map invocation as a file, to count executions (MIT jobcount).

Counts lines per file; each reduce key takes P2PMR_REDUCE_SLEEP seconds, so
a test can catch the reduce phase in the act.
"""

import os
import random
import time
import uuid

MARKERS = os.environ.get("P2PMR_MARKERS", "/nonexistent")
SLEEP = float(os.environ.get("P2PMR_JOBCOUNT_SLEEP", "0.5"))
REDUCE_SLEEP = float(os.environ.get("P2PMR_REDUCE_SLEEP", "0"))


def map_batch(records):
    records = list(records)
    first = records[0][0] if records else ("", -1)
    name = f"{first[0].replace('/', '_')}@{first[1]}@{uuid.uuid4().hex}"
    with open(os.path.join(MARKERS, name), "w") as handle:
        handle.write(str(len(records)))
    time.sleep(SLEEP * (1 + random.random()))
    for (path, _), _ in records:
        yield path, 1


def reduce(key, values):
    time.sleep(REDUCE_SLEEP)
    yield key, sum(values)
