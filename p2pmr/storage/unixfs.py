"""UnixFS files and directories, byte-identical to Kubo's ``ipfs add``.

The importer is a synchronous state machine (:class:`FileBuilder`) fed one
chunk at a time, so it can run in the event loop, in a thread, or inside a
worker process, and its memory stays flat: it only ever holds the current
chunk and at most ``max_links`` pending links per tree level.

The reader turns a root CID into the ordered list of :class:`Segment` that
hold the file's bytes. Each segment is one map split for the engine.
"""

from __future__ import annotations

import bisect
import logging
import os
import stat as stat_mod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from ..errors import UnixFSError, collapsed
from . import chunker
from .base import BlockSink, BlockSource
from .cid import CID, DAG_PB, RAW
from .dagpb import PBLink, decode_node, encode_node, iter_fields
from .varint import decode_uvarint, encode_uvarint

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_LINKS",
    "DirEntry",
    "FileBuilder",
    "ImportOptions",
    "Segment",
    "StreamImporter",
    "UnixFSNode",
    "add_bytes",
    "add_directory",
    "add_file",
    "add_path",
    "build_directory",
    "cat",
    "extract_data",
    "file_segments",
    "import_bytes",
    "iter_file_sync",
    "list_directory",
    "read_range",
    "stat",
    "walk_files",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE: Final = 262144
# go-unixfs: roughly 8 KiB of links per node at ~47 bytes per link.
DEFAULT_MAX_LINKS: Final = 174
# Kubo refuses blocks over 1 MiB for add; the exchange accepts up to 2 MiB.
MAX_CHUNK_SIZE: Final = 1024 * 1024

# UnixFS Data.DataType values.
T_RAW: Final = 0
T_DIRECTORY: Final = 1
T_FILE: Final = 2
T_METADATA: Final = 3
T_SYMLINK: Final = 4
T_HAMT_SHARD: Final = 5
_TYPE_NAMES: Final = {T_RAW: "raw", T_DIRECTORY: "directory", T_FILE: "file",
                      T_METADATA: "metadata", T_SYMLINK: "symlink", T_HAMT_SHARD: "hamt-shard"}

_EMPTY_DIR_DATA: Final = b"\x08\x01"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How a file becomes blocks; the defaults are Kubo's ``ipfs add`` defaults."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    cid_version: int = 0
    raw_leaves: bool | None = None  # None: raw leaves iff CIDv1, as Kubo does
    max_links: int = DEFAULT_MAX_LINKS
    chunker: str = "size"           # "size" (chunk_size bytes each) or "buzhash"

    def __post_init__(self) -> None:
        if self.chunker not in ("size", "buzhash"):
            raise ValueError(f"unknown chunker {self.chunker!r}: size or buzhash")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        if self.cid_version not in (0, 1):
            raise ValueError("CID version must be 0 or 1")
        if self.max_links < 2:
            raise ValueError("a node needs room for at least two links")

    @property
    def use_raw_leaves(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves

    @property
    def read_ahead(self) -> int:
        """Bytes a chunker needs in hand to decide its next cut."""
        return chunker.BUZ_MAX if self.chunker == "buzhash" else self.chunk_size

    def cut(self, buf: bytes | bytearray | memoryview, eof: bool) -> int:
        """Length of the next leaf at the front of ``buf`` (0: read more)."""
        if self.chunker == "buzhash":
            return chunker.buzhash_cut(buf, eof)
        return chunker.fixed_cut(buf, eof, self.chunk_size)

    @classmethod
    def from_chunker(cls, chunker: str = "size-262144", **kwargs: object) -> ImportOptions:
        """Accept Kubo's ``--chunker`` spellings: ``size-N`` and ``buzhash``."""
        if chunker == "default":
            return cls(**kwargs)  # type: ignore[arg-type]
        if chunker == "buzhash":
            return cls(chunker="buzhash", **kwargs)  # type: ignore[arg-type]
        if chunker.startswith("size-"):
            try:
                size = int(chunker[5:])
            except ValueError:
                raise ValueError(f"bad chunker {chunker!r}") from None
            return cls(chunk_size=size, **kwargs)  # type: ignore[arg-type]
        raise ValueError(f"unsupported chunker {chunker!r}: size-N or buzhash")


# -- UnixFS Data message ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnixFSNode:
    """A decoded UnixFS node: its dag-pb links plus the UnixFS Data fields."""

    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]
    links: tuple[PBLink, ...]
    fanout: int | None = None

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, str(self.type))


def _unixfs_file_leaf(chunk: bytes | memoryview) -> bytes:
    """A dag-pb leaf block: PBNode{Data: UnixFS{Type=File, Data, filesize}}."""
    n = len(chunk)
    if n == 0:
        inner = b"\x08\x02\x18\x00"
        return b"\x0a" + encode_uvarint(len(inner)) + inner
    nv = encode_uvarint(n)
    inner_len = 2 + 1 + len(nv) + n + 1 + len(nv)
    return b"".join((b"\x0a", encode_uvarint(inner_len), b"\x08\x02\x12", nv, chunk, b"\x18", nv))


def leaf_block_size(n: int) -> int:
    """Length of the dag-pb leaf block Kubo makes for ``n`` bytes of data."""
    nv = len(encode_uvarint(n))
    inner = 2 + 1 + nv + n + 1 + nv if n else 4
    return 1 + len(encode_uvarint(inner)) + inner


def _unixfs_internal_data(filesize: int, blocksizes: Iterable[int]) -> bytes:
    parts = [b"\x08\x02\x18", encode_uvarint(filesize)]
    for size in blocksizes:
        parts.append(b"\x20")
        parts.append(encode_uvarint(size))
    return b"".join(parts)


def decode_unixfs(cid: CID, block: bytes) -> UnixFSNode:
    """Decode a block as UnixFS. Raw blocks are file leaves."""
    if cid.codec == RAW:
        return UnixFSNode(T_FILE, block, len(block), (), ())
    if cid.codec != DAG_PB:
        raise UnixFSError(f"{cid} is {cid.codec_name}, not a UnixFS node")
    node = decode_node(block)
    if node.data is None:
        raise UnixFSError(f"{cid} is dag-pb but has no UnixFS data")
    type_ = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    fanout: int | None = None
    for number, wire, value in iter_fields(node.data, "UnixFS data"):
        if number == 1 and wire == 0 and isinstance(value, int):
            type_ = value
        elif number == 2 and wire == 2 and isinstance(value, memoryview):
            data = bytes(value)
        elif number == 3 and wire == 0 and isinstance(value, int):
            filesize = value
        elif number == 4 and wire == 0 and isinstance(value, int):
            blocksizes.append(value)
        elif number == 4 and wire == 2 and isinstance(value, memoryview):  # packed
            pos = 0
            while pos < len(value):
                try:
                    size, pos = decode_uvarint(value, pos)
                except ValueError as exc:
                    raise UnixFSError(f"{cid}: malformed blocksizes: {exc}") from None
                blocksizes.append(size)
        elif number == 6 and wire == 0 and isinstance(value, int):
            fanout = value
        # hashType (5), mode (7) and mtime (8) do not affect content.
    if type_ is None:
        raise UnixFSError(f"{cid}: UnixFS data without a type")
    return UnixFSNode(type_, data, filesize, tuple(blocksizes), node.links, fanout)


def extract_data(cid: CID, block: bytes) -> bytes:
    """The file bytes a single block holds itself (not its children's)."""
    if cid.codec == RAW:
        return block
    node = decode_unixfs(cid, block)
    if node.type not in (T_FILE, T_RAW):
        raise UnixFSError(f"{cid} is a UnixFS {node.type_name}, not file data")
    return node.data


# -- importer -------------------------------------------------------------------


@dataclass(slots=True)
class _Child:
    cid: CID
    tsize: int
    filesize: int


@dataclass(slots=True)
class FileBuilder:
    """Turns a stream of chunks into Kubo's balanced DAG.

    Feed exactly-sized chunks with :meth:`add_chunk` (the last may be short),
    then call :meth:`finish`. Each call returns the blocks it completed, in an
    order where children always precede parents.

    Kubo fills the tree depth-first; that is the same as grouping each level
    into runs of ``max_links`` as soon as a run is full, and wrapping what is
    left from the bottom up at the end, which needs no look-ahead.
    """

    options: ImportOptions = field(default_factory=ImportOptions)
    _levels: list[list[_Child]] = field(default_factory=list)
    _leaves: int = 0
    size: int = 0
    tsize: int = 0

    def add_chunk(self, chunk: bytes | memoryview) -> list[tuple[CID, bytes]]:
        if not chunk:
            return []
        opts = self.options
        if opts.use_raw_leaves:
            block = bytes(chunk)
            cid = CID.hash(block, version=1, codec=RAW)
            child = _Child(cid, len(block), len(block))
        else:
            block = _unixfs_file_leaf(chunk)
            cid = CID.hash(block, version=opts.cid_version)
            child = _Child(cid, len(block), len(chunk))
        self._leaves += 1
        self.size += len(chunk)
        out = [(cid, block)]
        self._push(0, child, out)
        return out

    def _push(self, level: int, child: _Child, out: list[tuple[CID, bytes]]) -> None:
        while True:
            if level == len(self._levels):
                self._levels.append([])
            row = self._levels[level]
            row.append(child)
            if len(row) < self.options.max_links:
                return
            child = self._internal(row, out)
            row.clear()
            level += 1

    def _internal(self, children: list[_Child], out: list[tuple[CID, bytes]]) -> _Child:
        filesize = sum(c.filesize for c in children)
        data = _unixfs_internal_data(filesize, (c.filesize for c in children))
        block = encode_node([PBLink(c.cid, "", c.tsize) for c in children], data)
        cid = CID.hash(block, version=self.options.cid_version)
        out.append((cid, block))
        return _Child(cid, len(block) + sum(c.tsize for c in children), filesize)

    def finish(self) -> tuple[CID, list[tuple[CID, bytes]]]:
        """Close the DAG; return the root CID and the last blocks.

        Afterwards :attr:`tsize` holds the root's cumulative size, which a
        directory link to this file needs.
        """
        out: list[tuple[CID, bytes]] = []
        if self._leaves == 0:
            block = b"" if self.options.use_raw_leaves else _unixfs_file_leaf(b"")
            cid = (CID.hash(block, version=1, codec=RAW) if self.options.use_raw_leaves
                   else CID.hash(block, version=self.options.cid_version))
            self.tsize = len(block)
            return cid, [(cid, block)]
        level = 0
        while True:
            top = max(i for i, row in enumerate(self._levels) if row)
            row = self._levels[level]
            if level == top and len(row) == 1:
                self.tsize = row[0].tsize
                return row[0].cid, out
            if row:
                child = self._internal(row, out)
                row.clear()
                if level + 1 == len(self._levels):
                    self._levels.append([])
                self._levels[level + 1].append(child)
            level += 1


def iter_chunks(data: bytes | memoryview, options: ImportOptions) -> Iterator[memoryview]:
    view = memoryview(data)
    start = 0
    while start < len(view):
        size = options.cut(view[start:start + options.read_ahead], True)
        yield view[start:start + size]
        start += size


def import_bytes(data: bytes | memoryview, options: ImportOptions | None = None
                 ) -> tuple[CID, list[tuple[CID, bytes]]]:
    """Import in memory; return the root and all blocks (children first).

    Worker processes use this to turn a task's output into blocks without
    touching the network or the event loop.
    """
    builder = FileBuilder(options or ImportOptions())
    blocks: list[tuple[CID, bytes]] = []
    for chunk in iter_chunks(data, builder.options):
        blocks.extend(builder.add_chunk(chunk))
    root, tail = builder.finish()
    blocks.extend(tail)
    return root, blocks


class StreamImporter:
    """Import bytes fed piece by piece: the same DAG and CIDs as :func:`import_bytes`.

    A task's output can be larger than the memory it may use, so it is
    written as it is made: pieces of any size are cut into exact chunks, and
    every block is handed to ``sink`` as soon as it is complete (children
    before parents), never held here.
    """

    def __init__(self, sink: Callable[[CID, bytes], None],
                 options: ImportOptions | None = None) -> None:
        self._builder = FileBuilder(options or ImportOptions())
        self._sink = sink
        self._buf = bytearray()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        buf = self._buf
        buf += data
        self.size += len(data)
        chunk = self._builder.options.chunk_size
        full = len(buf) - len(buf) % chunk
        if not full:
            return
        with memoryview(buf) as view:
            for start in range(0, full, chunk):
                self._emit(self._builder.add_chunk(view[start:start + chunk]))
        del buf[:full]

    def _emit(self, blocks: list[tuple[CID, bytes]]) -> None:
        for cid, block in blocks:
            self._sink(cid, block)

    def finish(self) -> CID:
        """Close the DAG after the last piece; return the root CID."""
        if self._buf:
            self._emit(self._builder.add_chunk(bytes(self._buf)))
            self._buf.clear()
        root, tail = self._builder.finish()
        self._emit(tail)
        return root


async def add_bytes(sink: BlockSink, data: bytes | memoryview,
                    options: ImportOptions | None = None) -> CID:
    root, blocks = import_bytes(data, options)
    for cid, block in blocks:
        await sink.put(cid, block)
    return root


async def add_stream(sink: BlockSink, read: Callable[[int], Awaitable[bytes]],
                     options: ImportOptions | None = None) -> tuple[CID, int]:
    """Import from an async ``read(n)``; return (root, cumulative DAG size).

    Each cut is made with the chunker's whole read-ahead in hand even when
    ``read`` returns short (pipes do), since CIDs depend on chunk boundaries.
    """
    builder = FileBuilder(options or ImportOptions())
    ahead = builder.options.read_ahead
    buf = bytearray()
    eof = False
    while True:
        while len(buf) < ahead and not eof:
            piece = await read(ahead - len(buf))
            eof = not piece
            buf += piece
        if not buf:
            break
        size = builder.options.cut(buf, eof)
        for cid, block in builder.add_chunk(bytes(buf[:size])):
            await sink.put(cid, block)
        del buf[:size]
    root, blocks = builder.finish()
    for cid, block in blocks:
        await sink.put(cid, block)
    return root, builder.tsize


async def add_file(sink: BlockSink, path: str | os.PathLike[str],
                   options: ImportOptions | None = None) -> CID:
    root, _ = await _add_file_sized(sink, Path(path), options or ImportOptions())
    return root


async def _add_file_sized(sink: BlockSink, path: Path, options: ImportOptions) -> tuple[CID, int]:
    async with await trio.open_file(path, "rb") as handle:
        return await add_stream(sink, handle.read, options)


# -- directories ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    cid: CID
    tsize: int
    type: str = ""  # "file", "directory", "symlink", or "" when not resolved


def build_directory(entries: Iterable[tuple[str, CID, int]], cid_version: int = 0,
                    ) -> tuple[CID, bytes, int]:
    """A basic (unsharded) UnixFS directory; return (CID, block, cumulative size).

    Links are sorted by name bytes, as Kubo writes them.
    """
    items = sorted(entries, key=lambda e: e[0].encode("utf-8"))
    names = [name for name, _, _ in items]
    if len(set(names)) != len(names):
        raise UnixFSError("duplicate names in directory")
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise UnixFSError(f"invalid directory entry name {name!r}")
    block = encode_node([PBLink(cid, name, tsize) for name, cid, tsize in items], _EMPTY_DIR_DATA)
    if len(block) > MAX_CHUNK_SIZE:
        raise UnixFSError(f"directory with {len(items)} entries exceeds one block; "
                          "sharded directories are not supported for writing")
    cid = CID.hash(block, version=cid_version)
    return cid, block, len(block) + sum(t for _, _, t in items)


async def add_directory(sink: BlockSink, path: str | os.PathLike[str],
                        options: ImportOptions | None = None, *, hidden: bool = False) -> CID:
    """Import a directory tree like ``ipfs add -r`` (hidden files skipped by default)."""
    root, _ = await _add_tree(sink, Path(path), options or ImportOptions(), hidden)
    return root


async def add_path(sink: BlockSink, path: str | os.PathLike[str],
                   options: ImportOptions | None = None, *, hidden: bool = False) -> CID:
    if await trio.Path(path).is_dir():
        return await add_directory(sink, path, options, hidden=hidden)
    return await add_file(sink, path, options)


async def _add_tree(sink: BlockSink, path: Path, options: ImportOptions,
                    hidden: bool) -> tuple[CID, int]:
    st = await trio.to_thread.run_sync(path.lstat)
    if stat_mod.S_ISLNK(st.st_mode):
        target = os.fsencode(await trio.to_thread.run_sync(os.readlink, path))
        block = encode_node([], b"\x08\x04\x12" + encode_uvarint(len(target)) + target)
        cid = CID.hash(block, version=options.cid_version)
        await sink.put(cid, block)
        return cid, len(block)
    if stat_mod.S_ISREG(st.st_mode):
        return await _add_file_sized(sink, path, options)
    if not stat_mod.S_ISDIR(st.st_mode):
        raise UnixFSError(f"{path}: not a regular file, directory or symlink")
    entries: list[tuple[str, CID, int]] = []
    children = await trio.to_thread.run_sync(lambda: sorted(path.iterdir()))
    for child in children:
        if not hidden and child.name.startswith("."):
            continue
        cid, tsize = await _add_tree(sink, child, options, hidden)
        entries.append((child.name, cid, tsize))
    cid, block, tsize = build_directory(entries, options.cid_version)
    await sink.put(cid, block)
    return cid, tsize


async def list_directory(source: BlockSource, cid: CID, *, resolve_types: bool = False
                         ) -> list[DirEntry]:
    """Entries of a directory (basic or HAMT-sharded), sorted by name."""
    node = decode_unixfs(cid, await source.get(cid))
    if node.type == T_DIRECTORY:
        entries = [DirEntry(link.name or "", link.cid, link.tsize or 0) for link in node.links]
    elif node.type == T_HAMT_SHARD:
        entries = await _hamt_entries(source, node)
    else:
        raise UnixFSError(f"{cid} is a UnixFS {node.type_name}, not a directory")
    if resolve_types:
        resolved = []
        for entry in entries:
            kind = await _entry_type(source, entry.cid)
            resolved.append(DirEntry(entry.name, entry.cid, entry.tsize, kind))
        entries = resolved
    return sorted(entries, key=lambda e: e.name.encode("utf-8"))


async def _hamt_entries(source: BlockSource, node: UnixFSNode) -> list[DirEntry]:
    # Shard link names are a fixed-width hex bucket prefix, followed by the
    # entry name for entries; a bare prefix is a child shard.
    width = len(f"{(node.fanout or 256) - 1:X}")
    out: list[DirEntry] = []
    for link in node.links:
        name = link.name or ""
        if len(name) > width:
            out.append(DirEntry(name[width:], link.cid, link.tsize or 0))
        else:
            child = decode_unixfs(link.cid, await source.get(link.cid))
            if child.type != T_HAMT_SHARD:
                raise UnixFSError(f"{link.cid}: expected a HAMT shard")
            out.extend(await _hamt_entries(source, child))
    return out


async def _entry_type(source: BlockSource, cid: CID) -> str:
    if cid.codec == RAW:
        return "file"
    node = decode_unixfs(cid, await source.get(cid))
    if node.type in (T_DIRECTORY, T_HAMT_SHARD):
        return "directory"
    if node.type == T_SYMLINK:
        return "symlink"
    return "file"


async def walk_files(source: BlockSource, cid: CID, prefix: str = "") -> list[tuple[str, CID]]:
    """Every file under ``cid`` as (relative path, CID), in path order.

    A file CID yields itself with path ``""``. Symlinks are skipped: following
    them could escape the tree the user named.
    """
    if cid.codec == RAW:
        return [(prefix, cid)]
    node = decode_unixfs(cid, await source.get(cid))
    if node.type in (T_FILE, T_RAW):
        return [(prefix, cid)]
    if node.type == T_SYMLINK:
        return []
    if node.type not in (T_DIRECTORY, T_HAMT_SHARD):
        raise UnixFSError(f"{cid} is a UnixFS {node.type_name}")
    out: list[tuple[str, CID]] = []
    for entry in await list_directory(source, cid):
        path = f"{prefix}/{entry.name}" if prefix else entry.name
        out.extend(await walk_files(source, entry.cid, path))
    return out


# -- reader ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of a file's bytes held by one block."""

    cid: CID
    offset: int
    size: int


async def file_segments(source: BlockSource, root: CID, *, trust_tsize: bool = True
                        ) -> list[Segment]:
    """The ordered blocks that hold a file's bytes, with offsets and sizes.

    With ``trust_tsize`` a dag-pb child whose link Tsize is exactly the size
    of a leaf holding ``blocksize`` bytes is taken to be a leaf without
    fetching it; an internal node can never have that Tsize, since its own
    block and its children's overhead add to it. That keeps a master from
    pulling every leaf of an input just to plan the splits. Whoever later
    reads the segment checks that it really is a leaf.
    """
    out: list[Segment] = []

    async def visit(cid: CID, offset: int, expect: int | None) -> int:
        block = await source.get(cid)
        node = decode_unixfs(cid, block)
        if node.type not in (T_FILE, T_RAW):
            raise UnixFSError(f"{cid} is a UnixFS {node.type_name}, not a file")
        if not node.links:
            if node.data:
                out.append(Segment(cid, offset, len(node.data)))
            size = len(node.data)
        else:
            if len(node.blocksizes) != len(node.links):
                raise UnixFSError(f"{cid}: {len(node.links)} links but "
                                  f"{len(node.blocksizes)} blocksizes")
            if node.data:
                out.append(Segment(cid, offset, len(node.data)))
            size = len(node.data)
            for link, bsize in zip(node.links, node.blocksizes, strict=True):
                if link.cid.codec == RAW or (trust_tsize and link.cid.codec == DAG_PB
                                             and link.tsize == leaf_block_size(bsize)):
                    if bsize:
                        out.append(Segment(link.cid, offset + size, bsize))
                    got = bsize
                else:
                    got = await visit(link.cid, offset + size, bsize)
                size += got
        if expect is not None and size != expect:
            raise UnixFSError(f"{cid} holds {size} bytes, its parent says {expect}")
        if node.filesize is not None and node.filesize != size:
            raise UnixFSError(f"{cid} says filesize {node.filesize} but holds {size} bytes")
        return size

    await visit(root, 0, None)
    return out


def iter_file_sync(get: Callable[[CID], bytes], root: CID) -> Iterator[bytes]:
    """A file's bytes, block by block, from a synchronous block getter.

    Worker processes stream their inputs through this, so a file never has
    to fit in memory: at any time it holds one block and the pending links
    of the nodes above it. Every node's sizes are checked against its
    parent's, as :func:`file_segments` does, so a malformed DAG is an error
    rather than silently wrong bytes.
    """
    stack: list[tuple[CID, int | None]] = [(root, None)]
    while stack:
        cid, expect = stack.pop()
        node = decode_unixfs(cid, get(cid))
        if node.type not in (T_FILE, T_RAW):
            raise UnixFSError(f"{cid} is a UnixFS {node.type_name}, not a file")
        if node.links and len(node.blocksizes) != len(node.links):
            raise UnixFSError(f"{cid}: {len(node.links)} links but {len(node.blocksizes)} sizes")
        size = len(node.data) + sum(node.blocksizes)
        if (expect is not None and size != expect) or \
                (node.filesize is not None and node.filesize != size):
            raise UnixFSError(f"{cid} holds {size} bytes, not what its parent says")
        if node.data:
            yield node.data
        stack.extend(zip(reversed([link.cid for link in node.links]),
                         reversed(node.blocksizes), strict=True))


async def read_segment(source: BlockSource, segment: Segment) -> bytes:
    data = extract_data(segment.cid, await source.get(segment.cid))
    if len(data) != segment.size:
        raise UnixFSError(f"{segment.cid} holds {len(data)} bytes, expected {segment.size}")
    return data


async def stat(source: BlockSource, cid: CID) -> tuple[str, int]:
    """(type name, size in bytes) without reading file contents."""
    if cid.codec == RAW:
        return "file", len(await source.get(cid))
    node = decode_unixfs(cid, await source.get(cid))
    if node.type in (T_FILE, T_RAW):
        size = node.filesize if node.filesize is not None else len(node.data) + sum(node.blocksizes)
        return "file", size
    return node.type_name, sum(link.tsize or 0 for link in node.links)


async def cat(source: BlockSource, root: CID, sink: Callable[[bytes], Awaitable[None]],
              offset: int = 0, length: int | None = None, *, ahead: int = 8) -> None:
    """Hand a file's bytes (or a range of them) to ``sink``, in order.

    Up to ``ahead`` blocks are fetched while the sink consumes earlier ones:
    over a network each block costs a round trip, and this keeps the pipe
    full while memory stays bounded by ``ahead`` blocks.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length must not be negative")
    segments = await file_segments(source, root)
    if not segments:
        return
    end = segments[-1].offset + segments[-1].size
    stop = end if length is None else min(end, offset + length)
    starts = [s.offset for s in segments]
    first = max(0, bisect.bisect_right(starts, offset) - 1)
    wanted = [s for s in segments[first:] if s.offset < stop]
    results: dict[int, bytes] = {}
    ready = [trio.Event() for _ in wanted]
    window = trio.Semaphore(ahead)

    async def fetch(i: int, seg: Segment) -> None:
        results[i] = await read_segment(source, seg)
        ready[i].set()

    async def fetch_ahead(nursery: trio.Nursery) -> None:
        for i, seg in enumerate(wanted):
            await window.acquire()
            nursery.start_soon(fetch, i, seg)

    with collapsed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_ahead, nursery)
            for i, seg in enumerate(wanted):
                await ready[i].wait()
                data = results.pop(i)
                window.release()
                lo = max(0, offset - seg.offset)
                hi = min(seg.size, stop - seg.offset)
                if hi > lo:
                    await sink(data[lo:hi])


async def read_range(source: BlockSource, root: CID, offset: int = 0,
                     length: int | None = None) -> bytes:
    pieces: list[bytes] = []

    async def collect(piece: bytes) -> None:
        pieces.append(piece)

    await cat(source, root, collect, offset, length)
    return b"".join(pieces)
