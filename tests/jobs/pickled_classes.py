"""Keys and values that are instances of classes defined in this file, which
only the pickle encoding can carry between peers."""

import re
from dataclasses import dataclass

WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, order=True)
class Initial:
    letter: str


@dataclass(frozen=True)
class Tally:
    words: int
    letters: int

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.words + other.words, self.letters + other.letters)


def map_batch(records):
    tallies = {}
    for _, line in records:
        for word in WORD.findall(line):
            key = Initial(word[0].lower())
            tallies[key] = tallies.get(key, Tally(0, 0)) + Tally(1, len(word))
    yield from tallies.items()


def reduce(key, values):
    total = Tally(0, 0)
    for value in values:
        total = total + value
    yield key.letter, f"{total.words} {total.letters}"
