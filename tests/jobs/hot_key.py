"""Counts and sums values, reading them one at a time; the first key only peeks."""


def map(key, line):
    yield line, 1


def reduce(key, values):
    if key == "peek":
        yield key, next(values)
        return
    count = total = 0
    for value in values:
        count += 1
        total += value
    yield key, (count, total)
