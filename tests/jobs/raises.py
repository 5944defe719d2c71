"""A job whose map raises on a particular line."""


def map(key, line):
    if "Frankenstein" in line:
        raise ValueError(f"refusing to map {line!r}")
    yield "lines", 1


def reduce(key, values):
    yield key, sum(values)
