"""Keys that do not compare (str and int), which a TotalOrder cannot sort."""

from p2pmr import TotalOrder

partition = TotalOrder()


def map(key, line):
    yield line, 1
    yield len(line), 1


def reduce(key, values):
    yield key, sum(values)
