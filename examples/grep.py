"""Distributed grep: every line matching a regular expression.

The pattern comes from the GREP_PATTERN environment variable when the job
is submitted (the job travels with the value it had then), default "whale".
Each output line is ``(path, offset)<TAB>line``, sorted by file and offset.

    GREP_PATTERN='[Mm]onster' p2pmr run examples/grep.py \
        --input examples/data/gutenberg --reducers 1 --local-peers 2
"""

import os
import re

PATTERN = re.compile(os.environ.get("GREP_PATTERN", "whale"))


def map(key, line):
    if PATTERN.search(line):
        yield key, line


def reduce(key, lines):
    for line in lines:
        yield key, line
