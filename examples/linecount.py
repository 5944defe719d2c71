"""How often each whole line occurs: a shuffle as large as the input.

Every line is an intermediate key and there is no combiner, so the map
output is about as large as the input and all of it crosses the shuffle.
It is the worst case for the data plane that scripts/bench_dataplane.py
measures; word count, by contrast, shrinks its data in the map.

    p2pmr run examples/linecount.py --input examples/data/gutenberg --reducers 2 --local-peers 2
"""


def map(key, line):
    yield line, 1


def reduce(line, counts):
    yield line, sum(counts)
