"""One key for every line: the reduce side's worst case.

Every line becomes the value of the same key and there is no combiner, so
one reduce task receives one value per input line (tens of millions for a
GiB of text) and must stream them: ``reduce`` reads ``values`` one at a
time and keeps only a count and a total. scripts/bench_dataplane.py runs it
to show that a single hot key needs no more memory than any other job.

    p2pmr run examples/hotkey.py --input examples/data/gutenberg --reducers 2 --local-peers 2
"""


def map(key, line):
    yield "lines", len(line)


def reduce(key, values):
    count = total = 0
    for length in values:
        count += 1
        total += length
    yield key, (count, total)
