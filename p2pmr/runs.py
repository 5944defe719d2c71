"""The reduce side's input: sorted runs of partitions, merged in bounded memory.

A partition (spec section 6.3) is one encoded array of ``[key_bytes,
[values]]`` pairs sorted by ``key_bytes``: a sorted run. A reducer merges
its runs by key bytes, and a key's values reach reduce in the order of the
runs (the order of the map tasks), then each run's own order, so the values
and every output CID are the same on every peer and every attempt.

Nothing here holds a whole input. Each run is read as a stream, one pair
at a time, and validated as it goes (shape, strictly increasing keys).
With more runs than ``fan_in``, consecutive groups of runs are merged into
spill files first, pass after pass, so no more than ``fan_in`` files are
open at once and the order of values is kept: each spill holds a
contiguous range of the inputs, and spills are merged in their order.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Final

import msgpack

from .encoding import Codec, msgpack_packer, msgpack_unpacker
from .errors import EncodingError, UnixFSError

__all__ = ["ChunkReader", "Counter", "MalformedInput", "Merge", "merge_runs", "read_run",
           "write_spill"]

log = logging.getLogger(__name__)

Run = Iterator[list[Any]]            # [key_bytes, values] pairs in key order
Opener = Callable[[], Run]           # opens a run when its merge starts

# Values per pair in a spill file: a key with more is written as several
# consecutive pairs, so reading a spill back never holds more than this
# many of one key's values.
SPILL_VALUES: Final = 65536
_ARRAY32: Final = b"\xdd"


class MalformedInput(Exception):
    """A partition that is not what the spec says: bad data, not a bad peer."""


class Counter:
    """Values read from the inputs (records in), counted as they stream past."""

    def __init__(self) -> None:
        self.values = 0


class ChunkReader:
    """``read(n)`` over an iterator of byte pieces (a UnixFS file, block by block)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._current = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        while not self._current:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._current = memoryview(piece)
        if n < 0 or n >= len(self._current):
            data = bytes(self._current)
            self._current = memoryview(b"")
            return data
        data = bytes(self._current[:n])
        self._current = self._current[n:]
        return data


def _unpack_failed(exc: BaseException) -> MalformedInput:
    if isinstance(exc, msgpack.OutOfData):
        return MalformedInput("malformed msgpack data: the partition ends early")
    if isinstance(exc, (EncodingError, UnixFSError, MalformedInput)):
        return MalformedInput(str(exc))
    return MalformedInput(f"malformed msgpack data: {exc}")


def read_run(source: Any, *, strict: bool = True, counter: Counter | None = None) -> Run:
    """The pairs of one msgpack partition read from ``source.read(n)``, checked.

    ``strict`` (an input) demands strictly increasing keys, as the spec
    does; a spill file of ours may repeat a key in consecutive pairs.
    """
    unpacker = msgpack_unpacker(source)
    try:
        count = unpacker.read_array_header()
    except (ValueError, TypeError, UnixFSError, msgpack.OutOfData) as exc:
        if isinstance(exc, ValueError) and "header" in str(exc):
            raise MalformedInput("a partition must be a list of [key, values] pairs") from None
        raise _unpack_failed(exc) from None
    previous = b""
    for _ in range(count):
        try:
            item = unpacker.unpack()
        except (ValueError, TypeError, UnixFSError, msgpack.OutOfData) as exc:
            raise _unpack_failed(exc) from None
        if type(item) is not list or len(item) != 2 or type(item[1]) is not list:
            raise MalformedInput("a partition must be a list of [key, values] pairs")
        kb = item[0]
        if type(kb) is not bytes or (previous and (kb <= previous if strict else kb < previous)):
            raise MalformedInput("partition keys must be bytes in strictly increasing order")
        previous = kb
        if counter is not None:
            counter.values += len(item[1])
        yield item
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return
    except (ValueError, TypeError, UnixFSError) as exc:
        raise _unpack_failed(exc) from None
    raise MalformedInput("malformed msgpack data: extra data after the partition")


def decoded_run(codec: Codec, data: bytes, counter: Counter | None = None) -> Run:
    """A run decoded whole: for the pickle encoding, which cannot be streamed."""
    try:
        items = codec.decode_partition(data)
    except EncodingError as exc:
        raise MalformedInput(str(exc)) from None
    if counter is not None:
        counter.values += sum(len(item[1]) for item in items)
    return iter(items)


class Merge:
    """A k-way merge of runs by key bytes, ties broken by run order.

    Heap entries are ``(key_bytes, run index, values)``: a run's keys are
    distinct (or, in a spill, repeated only in consecutive pairs), so the
    index always decides before the values would be compared, and a key's
    pairs come off the heap in run order.
    """

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = list(runs)
        self._heap: list[tuple[bytes, int, list[Any]]] = []
        for i, run in enumerate(self._runs):
            first = next(run, None)
            if first is not None:
                self._heap.append((first[0], i, first[1]))
        heapq.heapify(self._heap)

    def pairs(self) -> Iterator[tuple[bytes, list[Any]]]:
        """Every pair of every run, in (key bytes, run) order; keys may repeat."""
        heap, runs = self._heap, self._runs
        while heap:
            kb, i, values = heap[0]
            yield kb, values
            nxt = next(runs[i], None)
            if nxt is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (nxt[0], i, nxt[1]))

    def groups(self) -> Iterator[tuple[bytes, Iterator[Any]]]:
        """Each distinct key once, with a lazy iterator over all its values.

        The iterator pulls from the runs as it is consumed, so one key's
        values never need to be in memory together. Whatever the consumer
        leaves unread is skipped before the next key.
        """
        while self._heap:
            kb = self._heap[0][0]
            values = self._values(kb)
            yield kb, values
            deque(values, maxlen=0)

    def _values(self, kb: bytes) -> Iterator[Any]:
        heap, runs = self._heap, self._runs
        while heap and heap[0][0] == kb:
            _, i, values = heap[0]
            yield from values
            nxt = next(runs[i], None)
            if nxt is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (nxt[0], i, nxt[1]))


def write_spill(path: Path, pairs: Iterable[tuple[bytes, list[Any]]]) -> int:
    """Write merged pairs as a partition file; return how many pairs it holds.

    The array header is written as a 32-bit placeholder and filled in at the
    end, since the count is not known in advance. A pair with more than
    :data:`SPILL_VALUES` values is cut into consecutive pairs of one key.
    """
    pack = msgpack_packer().pack
    count = 0
    with open(path, "wb") as handle:
        handle.write(_ARRAY32 + bytes(4))
        for kb, values in pairs:
            if len(values) <= SPILL_VALUES:
                handle.write(pack([kb, values]))
                count += 1
                continue
            it = iter(values)
            while chunk := list(islice(it, SPILL_VALUES)):
                handle.write(pack([kb, chunk]))
                count += 1
        handle.seek(1)
        handle.write(count.to_bytes(4, "big"))
    return count


def _spill_run(path: Path) -> Run:
    with open(path, "rb") as handle:
        os.unlink(path)  # read from the open file; its disk space goes when it closes
        yield from read_run(handle, strict=False)


def merge_runs(openers: Sequence[Opener], spill_dir: Path | None, fan_in: int
               ) -> Iterator[tuple[bytes, Iterator[Any]]]:
    """All inputs merged into groups, at most ``fan_in`` runs open at a time.

    Without ``spill_dir`` (the pickle encoding, whose runs are decoded whole
    anyway) every run is merged at once.
    """
    level = 0
    current = list(openers)
    while spill_dir is not None and len(current) > max(2, fan_in):
        step = max(2, fan_in)
        following: list[Opener] = []
        for n, start in enumerate(range(0, len(current), step)):
            group = current[start:start + step]
            if len(group) == 1:
                following.append(group[0])
                continue
            path = spill_dir / f"spill-{level}-{n}"
            pairs = write_spill(path, Merge([open_run() for open_run in group]).pairs())
            following.append(partial(_spill_run, path))
            log.debug("merged runs %d..%d into %s (%d pairs)", start, start + len(group) - 1,
                      path.name, pairs)
        current = following
        level += 1
    return Merge([open_run() for open_run in current]).groups()
