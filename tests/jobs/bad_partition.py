"""A partitioner that names a reducer that does not exist."""


def map(key, line):
    yield line, 1


def partition(key, n_reducers):
    return n_reducers if key.startswith("b") else 0


def reduce(key, values):
    yield key, sum(values)
