"""Word count the classic way: ``map`` per line, no ``map_batch``, no combiner.

The same counts as examples/wordcount.py, but every word travels as its own
``(word, 1)`` pair from map to reduce. It exists to measure what
``map_batch`` and ``combine`` save (scripts/bench_dataplane.py runs both).

    p2pmr run examples/wordcount_per_line.py --input examples/data/gutenberg --local-peers 2
"""

import re

WORD = re.compile(r"[^\W\d_]+")


def map(key, line):
    for word in WORD.findall(line):
        yield word, 1


def reduce(word, counts):
    yield word, sum(counts)
