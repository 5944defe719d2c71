"""Total-order sort: every line of the input, in order, across all the parts.

With the default partitioner a key's reducer is a hash of it, so each part
file is sorted but the parts interleave. ``TotalOrder`` gives each reducer
one range of keys instead, with boundaries sampled from the input before
the map phase, so ``part-00000``, ``part-00001``, ... concatenated are one
sorted sequence (what Hadoop's TeraSort does with its TotalOrderPartitioner).

Each output line is ``line<TAB>`` (the part-file format is ``key<TAB>value``,
and the value here is empty); a line that occurs n times is written n times.
Lines sort by Python's string order, code point by code point.

    p2pmr run examples/sort.py --input examples/data/gutenberg --reducers 4 \
        --local-peers 2 --output sorted/
    cat sorted/part-* | sed 's/\t$//'
"""

from p2pmr import TotalOrder

# The master maps the lines of up to 64 evenly spaced leaf blocks of the
# input (16 MiB at most) to find where each reducer's range begins.
partition = TotalOrder(blocks=64)


def map_batch(records):
    for _, line in records:
        yield line, 1


def combine(line, counts):
    yield line, sum(counts)


def reduce(line, counts):
    for _ in range(sum(counts)):
        yield line, ""
