"""A partitioner of its own: short words to reducer 0, longer ones spread by length."""


def map(key, line):
    for word in line.split():
        yield word, 1


def partition(word, n_reducers):
    return min(len(word) // 3, n_reducers - 1)


def combine(word, counts):
    yield word, sum(counts)


def reduce(word, counts):
    yield word, sum(counts)
