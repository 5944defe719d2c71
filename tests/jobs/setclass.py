"""A job whose code holds a set and a class, which pickle differently from run
to run unless p2pmr pins the hash seed and cloudpickle's class ids; and whose
map iterates over a set, so its record order depends on the hash seed."""

STOP = {"the", "and", "of", "to", "a", "in", "that", "it", "was", "he"}


class Tally:
    def __init__(self):
        self.words = set()

    def add(self, line):
        self.words.update(w for w in line.lower().split() if w.isalpha() and w not in STOP)


def map_batch(records):
    tally = Tally()
    for _, line in records:
        tally.add(line)
    for word in tally.words:  # set order: fixed only with a fixed hash seed
        yield word[:1], [word]


def reduce(key, values):
    yield key, len({w for ws in values for w in ws})
