"""Every line a key, in ranges from a sample of four leaf blocks: the golden
vector of sampled boundaries (protocols/vectors/sort-boundaries.json)."""

from p2pmr import TotalOrder

partition = TotalOrder(blocks=4)


def map(key, line):
    yield line, None


def reduce(line, values):
    for _ in values:
        yield line, ""
