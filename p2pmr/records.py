"""Lines as records, exactly once across block boundaries.

A map split is a run of consecutive leaf blocks of one file (often several
MiB). The split maps every line that lies wholly inside its run, and hands
back the partial lines at its two edges (*fragments*). The master joins the
fragments on each side of a boundary into whole lines and maps those as one
extra task. A line is therefore mapped exactly once whatever the chunker did
to it, even a line longer than several blocks, and every split stays a pure
function of its blocks.

Who maps what, for a run of a file ("block" below is the whole run):

* a line that starts and ends (with ``\\n``) inside the block: the split;
* the bytes before the block's first ``\\n`` (the *head*): the split when the
  block starts the file, else the master joins them to what came before;
* the bytes after the block's last ``\\n`` (the *tail*): the split when the
  block ends the file (a last line without a newline), else the master;
* a block with no ``\\n`` is all fragment: it continues a line.

A record's key is ``(path, offset)``, the line's byte offset in its file;
its value is the line without its ``\\n`` (or ``\\r\\n``), decoded as UTF-8
with bad bytes replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import TYPE_CHECKING

import msgpack

if TYPE_CHECKING:
    from .storage.cid import CID

__all__ = [
    "BlockEdges",
    "block_records",
    "SplitInfo",
    "decode_line",
    "decode_records",
    "encode_records",
    "iter_block_lines",
    "iter_records",
    "stitch_file",
]


def decode_line(raw: bytes, terminated: bool) -> str:
    """A line's text: without its newline (and the CR of a CRLF)."""
    if terminated and raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class BlockEdges:
    """The fragments a split returns; lengths in bytes."""

    head: int        # bytes up to and including the first "\n" (0 when first)
    tail: int        # bytes after the last "\n" (0 when last)
    no_newline: bool  # the block is one fragment (head == block size)


def iter_block_lines(data: bytes, base: int, first: bool, last: bool
                     ) -> tuple[list[tuple[int, bytes, bool]], BlockEdges]:
    """Split a block into whole lines and edge fragments.

    Returns ([(file offset, raw line without "\\n", terminated)], edges).
    """
    p = data.find(b"\n")
    if p < 0:
        if first and last:
            return ([(base, data, False)] if data else []), BlockEdges(0, 0, False)
        return [], BlockEdges(len(data), 0, True)
    q = data.rfind(b"\n")
    start = 0 if first else p + 1
    lines: list[tuple[int, bytes, bool]] = []
    pos = start
    if start <= q:
        for raw in data[start:q].split(b"\n"):
            lines.append((base + pos, raw, True))
            pos += len(raw) + 1
    tail = len(data) - q - 1
    if last:
        if tail:
            lines.append((base + q + 1, data[q + 1:], False))
        tail = 0
    return lines, BlockEdges(0 if first else p + 1, tail, False)


def iter_records(path: str, lines: list[tuple[int, bytes, bool]]
                 ) -> Iterator[tuple[tuple[str, int], str]]:
    for offset, raw, terminated in lines:
        yield (path, offset), decode_line(raw, terminated)


def block_records(path: str, data: bytes, base: int, first: bool, last: bool
                  ) -> tuple[Iterable[tuple[tuple[str, int], str]], int, BlockEdges]:
    """The records a split maps, built with a few C-level passes per block.

    Equivalent to :func:`iter_block_lines` followed by :func:`iter_records`
    (the tests check this), but it decodes the block's lines in one call:
    ``\n`` can never be part of a UTF-8 sequence, so decoding the whole run
    of lines and splitting on ``\n`` gives the same text as decoding each
    line on its own, replacement characters included.
    Returns (records, count, edges).
    """
    p = data.find(b"\n")
    if p < 0:
        if first and last and data:
            return [((path, base), data.decode("utf-8", "replace"))], 1, BlockEdges(0, 0, False)
        if first and last:
            return [], 0, BlockEdges(0, 0, False)
        return [], 0, BlockEdges(len(data), 0, True)
    q = data.rfind(b"\n")
    start = 0 if first else p + 1
    offsets: list[int] = []
    texts: list[str] = []
    if start <= q:
        chunk = data[start:q]
        raws = chunk.split(b"\n")
        texts = chunk.decode("utf-8", "replace").split("\n")
        offsets = list(accumulate((len(r) + 1 for r in raws), initial=base + start))
        offsets.pop()
        if b"\r" in chunk:
            texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    tail = len(data) - q - 1
    if last:
        if tail:
            offsets.append(base + q + 1)
            texts.append(data[q + 1:].decode("utf-8", "replace"))
        tail = 0
    keys = zip(repeat(path), offsets)  # repeat() is endless: no strict=
    records = zip(keys, texts, strict=True)
    return records, len(texts), BlockEdges(0 if first else p + 1, tail, False)


@dataclass(slots=True)
class SplitInfo:
    """One split: a run of consecutive leaf blocks of a file, and its edges once mapped.

    The master plans a map task per split with this as its payload; the
    split's map task reports ``edges`` and the fragment bytes, which
    :func:`stitch_file` joins into the lines that cross block boundaries.
    """

    offset: int
    size: int
    first: bool
    last: bool
    edges: BlockEdges | None = None
    head: bytes | None = None   # the fragment bytes, once known
    tail: bytes | None = None
    block: CID | None = None    # the run's first leaf block
    path: str = ""              # the file's path in the input
    file: int = 0               # the file's index in the input
    more: tuple[CID, ...] = ()   # the run's further blocks, in order
    sizes: tuple[int, ...] = ()  # file bytes per block; () for a run of one block

    @property
    def blocks(self) -> tuple[CID, ...]:
        return () if self.block is None else (self.block, *self.more)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return self.sizes or (self.size,)


def stitch_file(splits: list[SplitInfo], *, partial: bool = False
                ) -> list[tuple[int, bytes, bool, int]]:
    """Join the edge fragments of a file's splits into whole lines.

    ``splits`` are the first splits of one file, in order (all of them
    unless ``partial``), each with ``edges`` and the fragment bytes it names
    (``head`` holds the whole block for a block with no newline). Returns
    [(file offset, raw line without "\\n", terminated, index of the split
    where the line ends)].
    """
    out: list[tuple[int, bytes, bool, int]] = []
    carry: bytearray | None = None
    carry_start = 0
    for index, split in enumerate(splits):
        edges = split.edges
        if edges is None:
            raise ValueError("split without a result")
        # A missing fragment would silently shorten a line: refuse instead.
        head = split.head
        if head is None and edges.head and (edges.no_newline or not split.first):
            raise ValueError(f"the head fragment of the split at offset {split.offset} "
                             "is not known")
        if edges.no_newline:
            if carry is None:
                carry = bytearray()
                carry_start = split.offset
            carry += head or b""
            if split.last:
                out.append((carry_start, bytes(carry), False, index))
                carry = None
            continue
        if not split.first:
            if carry is None:
                carry = bytearray()
                carry_start = split.offset
            carry += head or b""
            out.append((carry_start, bytes(carry[:-1]), True, index))
            carry = None
        if not split.last:
            if split.tail is None and edges.tail:
                raise ValueError(f"the tail fragment of the split at offset {split.offset} "
                                 "is not known")
            carry = bytearray(split.tail or b"")
            carry_start = split.offset + split.size - edges.tail
    if carry is not None and not partial:
        # Only reachable if the last split was missing its `last` flag.
        raise ValueError("file ended inside a line: splits are incomplete")
    return out


def encode_records(records: Iterable[tuple[str, int, bytes, bool]]) -> bytes:
    """A records file: the lines a boundary task maps, as (path, offset, raw
    line, terminated). Framework data, so always msgpack (spec section 6.4)."""
    data: bytes = msgpack.packb([[p, o, r, t] for p, o, r, t in records], use_bin_type=True)
    return data


def decode_records(data: bytes) -> list[tuple[str, int, bytes, bool]]:
    items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    out = []
    for item in items:
        path, offset, raw, terminated = item
        if not (isinstance(path, str) and isinstance(offset, int) and isinstance(raw, bytes)):
            raise ValueError("malformed records file")
        out.append((path, offset, raw, bool(terminated)))
    return out
