"""Inverted index: each word, and the sorted, comma-joined files containing it.

    p2pmr run examples/indexer.py --input examples/data/gutenberg --reducers 4 --local-peers 3
"""

import re

WORD = re.compile(r"[^\W\d_]+")


def map_batch(records):
    seen = set()
    for (path, _offset), line in records:
        for word in WORD.findall(line):
            seen.add((word, path))
    yield from seen


def combine(word, paths):
    for path in set(paths):
        yield word, path


def reduce(word, paths):
    yield word, ",".join(sorted(set(paths)))
