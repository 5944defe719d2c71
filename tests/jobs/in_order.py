"""Groups each line's offset under its first word: reduce sees values in order."""


def map(key, line):
    words = line.split()
    yield (words[0] if words else ""), key[1]


def reduce(key, values):
    yield key, list(values)
