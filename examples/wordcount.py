"""Word count, as in the MIT 6.824 MapReduce lab.

Words are maximal runs of Unicode letters. ``map_batch`` counts a whole
split with one Counter, which is several times faster in Python than
yielding ``(word, 1)`` for every word; ``map`` is the classic per-line form
and gives the same result.

    p2pmr run examples/wordcount.py --input examples/data/gutenberg --reducers 4 --local-peers 3
"""

import re
from collections import Counter

WORD = re.compile(r"[^\W\d_]+")

# Words do not depend on where a line lies: records come without their
# (path, offset) keys, and a re-run after an edit maps only what changed.
RECORD_KEYS = False


def map(_, line):
    for word in WORD.findall(line):
        yield word, 1


def map_batch(records):
    counts = Counter()
    findall = WORD.findall
    for _, line in records:
        counts.update(findall(line))
    yield from counts.items()


def combine(word, counts):
    yield word, sum(counts)


def reduce(word, counts):
    yield word, sum(counts)
