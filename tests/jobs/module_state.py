"""Word counts from a job whose module-level code makes what cannot be
pickled: a system random source, a lock, an open file, a database
connection. Each worker runs this code itself; the counts stay exact."""

import os
import random
import re
import sqlite3
import threading

WORD = re.compile(r"[^\W\d_]+")
RNG = random.SystemRandom()
LOCK = threading.Lock()
SINK = open(os.devnull, "w")  # noqa: SIM115 (open for the process's lifetime)
DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.execute("CREATE TABLE words (word TEXT)")
LINES = 0


def map(key, line):
    global LINES
    words = WORD.findall(line)
    RNG.shuffle(words)  # the order of a line's words does not change the counts
    with LOCK:
        LINES += 1
    SINK.write(line)
    DB.executemany("INSERT INTO words VALUES (?)", [(w,) for w in words])
    for (word,) in DB.execute("SELECT word FROM words"):
        yield word, 1
    DB.execute("DELETE FROM words")


def reduce(word, counts):
    yield word, sum(counts)
