"""A reduce task's output lines, sorted by key within a memory budget.

Spec section 6.5 sorts a part file's lines by key with a stable sort, by
the keys' natural order, or by ``(type name, str(key))`` when they do not
compare. An output can be larger than the memory a worker may use, so the
pairs are buffered up to a budget, each full buffer is sorted and spilled
to disk as a chunk, and the chunks are merged with ties going to the
earlier chunk: the same order one stable sort of everything gives.

An output that fits the budget is sorted in memory in one go, exactly as
before. Should keys turn out not to compare (a ``TypeError`` anywhere), the
whole output is sorted again by the fallback key, from the chunks on disk.
"""

from __future__ import annotations

import heapq
import logging
import pickle
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

from .errors import EncodingError

__all__ = ["OutputSorter", "Unorderable"]

log = logging.getLogger(__name__)

Record = tuple[Any, str]   # (key, its output line)

# What one buffered record costs beyond its line's characters: the tuple,
# the list slot, the str headers. An estimate; it only decides when to spill.
_RECORD_OVERHEAD: Final = 120
_BATCH: Final = 4096       # records per pickle in a chunk file
_TEXT_PIECE: Final = 1024 * 1024  # characters encoded at a time

_natural = itemgetter(0)


def _fallback(record: Record) -> tuple[str, str]:
    key = record[0]
    return type(key).__name__, str(key)


class Unorderable(Exception):
    """The keys do not compare: start the output again, sorted by the fallback key."""


class OutputSorter:
    """Collects ``(key, value)`` pairs and hands back their text, sorted."""

    def __init__(self, budget: int, spill_dir: Path) -> None:
        self.budget = max(1, budget)
        self.spill_dir = spill_dir
        self.pairs = 0
        self.fallback = False
        self._buffer: list[Record] = []
        self._size = 0
        self._chunks: list[Path] = []

    def add(self, key: Any, value: Any) -> None:
        text = f"{key}\t{value}\n"
        self._buffer.append((key, text))
        self.pairs += 1
        self._size += 2 * len(text) + _RECORD_OVERHEAD
        if self._size > self.budget:
            self._spill()

    def _sort(self, records: list[Record]) -> None:
        if not self.fallback:
            try:
                records.sort(key=_natural)
                return
            except TypeError:  # keys of mixed, unorderable types
                self._use_fallback()
        records.sort(key=_fallback)

    def _use_fallback(self) -> None:
        """From now on sort by (type name, str(key)); re-sort what was spilled."""
        self.fallback = True
        log.debug("output keys do not compare; sorting by type name and str(key)")
        for path in self._chunks:
            records = list(self._read_chunk(path))
            records.sort(key=_fallback)
            self._write_chunk(path, records)

    def _spill(self) -> None:
        self._sort(self._buffer)
        path = self.spill_dir / f"output-{len(self._chunks)}"
        self._chunks.append(path)
        self._write_chunk(path, self._buffer)
        self._buffer = []
        self._size = 0

    def _write_chunk(self, path: Path, records: list[Record]) -> None:
        with open(path, "wb") as handle:
            for start in range(0, len(records), _BATCH):
                try:
                    pickle.dump(records[start:start + _BATCH], handle, protocol=5)
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    raise EncodingError(
                        f"an output this large is sorted on disk, and one of reduce's keys "
                        f"cannot be written there (pickled): {exc}") from exc

    @staticmethod
    def _read_chunk(path: Path) -> Iterator[Record]:
        with open(path, "rb") as handle:
            while True:
                try:
                    batch: list[Record] = pickle.load(handle)
                except EOFError:
                    return
                yield from batch

    def _sorted(self) -> Iterator[Record]:
        """Every record in output order (raises Unorderable when keys do not compare)."""
        if not self._chunks:
            self._sort(self._buffer)
            return iter(self._buffer)
        self._sort(self._buffer)
        sources: list[Iterable[Record]] = [self._read_chunk(p) for p in self._chunks]
        sources.append(self._buffer)
        return heapq.merge(*sources, key=_fallback if self.fallback else _natural)

    def pieces(self) -> Iterator[bytes]:
        """The output text, UTF-8 with surrogateescape, a piece at a time.

        Raises :class:`Unorderable` (before or after yielding) when the keys
        turn out not to compare across chunks; then everything is re-sorted
        by the fallback key and the caller starts its output over.
        """
        try:
            records = self._sorted()
            parts: list[str] = []
            size = 0
            for _, text in records:
                parts.append(text)
                size += len(text)
                if size >= _TEXT_PIECE:
                    yield "".join(parts).encode("utf-8", "surrogateescape")
                    parts, size = [], 0
        except TypeError:
            if self.fallback:
                raise
            self._use_fallback()
            self._buffer.sort(key=_fallback)
            raise Unorderable() from None
        if parts:
            yield "".join(parts).encode("utf-8", "surrogateescape")

    def write_to(self, restart: Callable[[], Callable[[bytes], None]]) -> None:
        """Send the whole text to ``restart()``'s writer, again from the start if needed."""
        while True:
            write = restart()
            try:
                for piece in self.pieces():
                    write(piece)
                return
            except Unorderable:
                continue
