"""The reduce side's input: sorted runs of partitions, merged in bounded memory.

A partition (spec section 6.3) is one encoded array of ``[key_bytes,
[values]]`` pairs sorted by ``key_bytes``: a sorted run. A reducer merges
its runs by key bytes, and a key's values reach reduce in the order of the
runs (the order of the map tasks), then each run's own order, so the values
and every output CID are the same on every peer and every attempt.

Nothing here holds a whole input. Each run is read as a stream, a batch
of pairs at a time, and validated as it goes (shape, strictly increasing
keys).
With more runs than ``fan_in``, consecutive groups of runs are merged into
spill files first, pass after pass, so no more than ``fan_in`` files are
open at once and the order of values is kept: each spill holds a
contiguous range of the inputs, and spills are merged in their order.
"""

from __future__ import annotations

import logging
import operator
import os
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import chain, groupby, islice
from pathlib import Path
from typing import Any, Final

import msgpack

from .encoding import Codec, msgpack_packer, msgpack_unpacker
from .errors import EncodingError, UnixFSError

__all__ = ["ChunkReader", "Counter", "MalformedInput", "Merge", "Opener", "Run", "decoded_run",
           "merge_runs", "read_run", "write_spill"]

log = logging.getLogger(__name__)

Run = Iterator[list[list[Any]]]      # batches of [key_bytes, values] pairs, in key order
Opener = Callable[[], Run]           # opens a run when its merge starts

# Values per pair in a spill file: a key with more is written as several
# consecutive pairs, so reading a spill back never holds more than this
# many of one key's values.
SPILL_VALUES: Final = 8192
_BATCH_BYTES: Final = 64 * 1024  # encoded bytes a run reads at a time, about
_MAX_BATCH: Final = 8192         # pairs a run reads at a time, at most
_KEY = operator.itemgetter(0)
_VALUES = operator.itemgetter(1)
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


def _check(batch: list[Any], previous: bytes | None, strict: bool) -> int:
    """Check a batch of pairs for shape and key order; return its number of values.

    Done a batch at a time with C-level helpers rather than pair by pair:
    the pairs of a large reduce number in the millions.
    """
    if set(map(type, batch)) != {list} or set(map(len, batch)) != {2}:
        raise MalformedInput("a partition must be a list of [key, values] pairs")
    keys = list(map(_KEY, batch))
    values = list(map(_VALUES, batch))
    if set(map(type, values)) != {list}:
        raise MalformedInput("a partition must be a list of [key, values] pairs")
    before = operator.lt if strict else operator.le
    if set(map(type, keys)) != {bytes} or (previous and not before(previous, keys[0])) \
            or not all(map(before, keys, islice(keys, 1, None))):
        raise MalformedInput("partition keys must be bytes in strictly increasing order")
    return sum(map(len, values))


def read_run(source: Any, *, strict: bool = True, counter: Counter | None = None) -> Run:
    """The pairs of one msgpack partition read from ``source.read(n)``, checked.

    Pairs come in batches of about :data:`_BATCH_BYTES` of encoded data, so
    a run of small pairs costs few Python-level steps and a run of large
    ones holds little more than one pair at a time. ``strict`` (an input)
    demands strictly increasing keys, as the spec does; a spill file of ours
    may repeat a key in consecutive pairs.
    """
    unpacker = msgpack_unpacker(source)
    try:
        left = unpacker.read_array_header()
    except (ValueError, TypeError, UnixFSError, msgpack.OutOfData) as exc:
        if isinstance(exc, ValueError) and "header" in str(exc):
            raise MalformedInput("a partition must be a list of [key, values] pairs") from None
        raise _unpack_failed(exc) from None
    previous: bytes | None = None
    size = 16
    while left:
        want = min(size, left)
        start = unpacker.tell()
        try:
            batch = list(islice(unpacker, want))
        except (ValueError, TypeError, UnixFSError) as exc:
            raise _unpack_failed(exc) from None
        if len(batch) < want:
            raise _unpack_failed(msgpack.OutOfData())
        values = _check(batch, previous, strict)
        if counter is not None:
            counter.values += values
        previous = batch[-1][0]
        left -= want
        used = unpacker.tell() - start
        size = min(size * 2, _MAX_BATCH) if used < _BATCH_BYTES else max(1, size // 2)
        yield batch
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
    return iter([items] if items else [])


class Merge:
    """A k-way merge of runs by key bytes, ties broken by run order.

    It goes in rounds. Each run holds one batch; the smallest last key of
    the runs that may still have more is the cut. Every pair below the cut,
    from every run, is in memory: those are concatenated in run order and
    sorted with Python's stable sort (a merge of sorted runs, in C), so a
    key's pairs stay in run order. The cut key itself may go on in the runs'
    next batches, so it is streamed run after run, refilling as it goes.
    """

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = [iter(run) for run in runs]
        self._bufs: list[list[list[Any]]] = [[] for _ in self._runs]
        self._pos = [0] * len(self._runs)
        self._live = [True] * len(self._runs)

    def _refill(self, i: int) -> bool:
        """Give run ``i`` unread pairs if it has any more; False once it is done."""
        while self._pos[i] == len(self._bufs[i]):
            if not self._live[i]:
                return False
            batch = next(self._runs[i], None)
            if batch is None:
                self._live[i] = False
                self._bufs[i], self._pos[i] = [], 0
                return False
            self._bufs[i], self._pos[i] = batch, 0
        return True

    def _round(self) -> tuple[list[list[Any]], bytes | None]:
        """The pairs below the cut, in merge order, and the cut (None: the end)."""
        bufs, pos = self._bufs, self._pos
        for i in range(len(bufs)):
            self._refill(i)
        cut = min((bufs[i][-1][0] for i in range(len(bufs)) if self._live[i]), default=None)
        taken: list[list[Any]] = []
        for i, buf in enumerate(bufs):
            start = pos[i]
            if start == len(buf):
                continue
            stop = len(buf) if cut is None else bisect_left(buf, cut, lo=start, key=_KEY)
            if stop > start:
                taken += buf[start:stop]
                pos[i] = stop
        taken.sort(key=_KEY)
        return taken, cut

    def _cut_pairs(self, cut: bytes) -> Iterator[list[Any]]:
        """Every pair of key ``cut``, run after run, reading ahead as needed."""
        bufs, pos = self._bufs, self._pos
        for i in range(len(bufs)):
            while self._refill(i):
                pair = bufs[i][pos[i]]
                if pair[0] != cut:
                    break
                pos[i] += 1
                yield pair

    def merged(self) -> Iterator[list[list[Any]]]:
        """Batches of pairs, one per key, values joined in run order (for spill files).

        A key's values are joined up to :data:`SPILL_VALUES` at a time; past
        that the key goes on in the next pair, so nothing holds all of them.
        """
        while True:
            taken, cut = self._round()
            if taken:
                yield [[kb, list(chain.from_iterable(map(_VALUES, same)))]
                       for kb, same in groupby(taken, key=_KEY)]
            if cut is None:
                return
            values: list[Any] = []
            for pair in self._cut_pairs(cut):
                values += pair[1]
                if len(values) >= SPILL_VALUES:
                    yield [[cut, values]]
                    values = []
            if values:
                yield [[cut, values]]

    def groups(self) -> Iterator[tuple[bytes, Iterator[Any]]]:
        """Each distinct key once, with a lazy iterator over all its values.

        The iterator pulls from the runs as it is consumed, so one key's
        values never need to be in memory together (only those of one pair,
        and the pairs of the current round). Whatever the consumer leaves
        unread is skipped before the next key.
        """
        while True:
            taken, cut = self._round()
            for kb, same in groupby(taken, key=_KEY):
                yield kb, chain.from_iterable(map(_VALUES, same))
            if cut is None:
                return
            values = chain.from_iterable(map(_VALUES, self._cut_pairs(cut)))
            yield cut, values
            deque(values, maxlen=0)


def write_spill(path: Path, batches: Iterable[list[list[Any]]]) -> int:
    """Write merged batches of pairs as a partition file; return how many pairs it holds.

    The array header is written as a 32-bit placeholder and filled in at the
    end, since the count is not known in advance. A pair with more than
    :data:`SPILL_VALUES` values is cut into consecutive pairs of one key.
    """
    pack = msgpack_packer().pack
    count = 0
    with open(path, "wb") as handle:
        handle.write(_ARRAY32 + bytes(4))
        for batch in batches:
            if max(map(len, map(_VALUES, batch))) <= SPILL_VALUES:
                handle.write(b"".join(map(pack, batch)))
                count += len(batch)
                continue
            for kb, values in batch:
                for start in range(0, len(values), SPILL_VALUES):
                    handle.write(pack([kb, values[start:start + SPILL_VALUES]]))
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
            pairs = write_spill(path, Merge([open_run() for open_run in group]).merged())
            following.append(partial(_spill_run, path))
            log.debug("merged runs %d..%d into %s (%d pairs)", start, start + len(group) - 1,
                      path.name, pairs)
        current = following
        level += 1
    return Merge([open_run() for open_run in current]).groups()
