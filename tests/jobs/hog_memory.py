"""A map that allocates without bound."""


def map_batch(records):
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))
    yield "never", 0


def reduce(key, values):
    yield key, sum(values)
