"""Test copy of an inverted index job (kept independent of examples/)."""

import re

WORD = re.compile(r"[^\W\d_]+")


def map_batch(records):
    seen = set()
    for (path, _), line in records:
        for word in WORD.findall(line):
            seen.add((word, path))
    for word, path in seen:
        yield word, path


def reduce(word, paths):
    yield word, ",".join(sorted(set(paths)))
