"""The block-store interface, and what works the same on every store.

Every part of p2pmr reads and writes IPFS blocks through :class:`BlockStore`,
whichever backend sits behind it: the embedded node (blocks on local disk,
missing ones over Bitswap; :mod:`.embedded`), a Kubo daemon (:mod:`.kubo`),
or the bare local store (:mod:`.flatfs`) for offline commands. Callers never
ask which: what differs between backends lives behind these methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import trio

from ..errors import CorruptBlock, StorageError, collapsed
from .cid import CID, DAG_PB, RAW
from .dagpb import decode_node

if TYPE_CHECKING:  # workers use this module and must not import libp2p
    from libp2p.peer.id import ID as PeerID

__all__ = ["MAX_BLOCK_SIZE", "BlockSink", "BlockSource", "BlockStore", "Fetcher", "dag_links",
           "fetch_dag", "missing_blocks"]

# Bitswap's specification requires peers to handle blocks of up to 2 MiB.
MAX_BLOCK_SIZE: Final = 2 * 1024 * 1024


class BlockSource(Protocol):
    """Anything blocks can be read from (a store, or a :class:`Fetcher`)."""

    async def get(self, cid: CID, *, timeout: float | None = None) -> bytes: ...


class BlockSink(Protocol):
    async def put(self, cid: CID, data: bytes) -> None: ...


@runtime_checkable
class BlockStore(Protocol):
    """What the rest of the system needs from storage.

    ``get`` may go to the network (the embedded node's peers, or a daemon)
    and raises :class:`~p2pmr.errors.BlockNotFound` when nothing produced the
    block before the deadline. Every block that crosses a network, and every
    block read from local disk, is checked against its CID first.
    """

    #: A flatfs repo that worker processes may read and write blocks in
    #: directly (then they tell the store with :meth:`written`); None when
    #: blocks live elsewhere (a daemon).
    local_root: Path | None

    #: Other repos' flatfs stores on this machine that this store reads
    #: blocks from in place, after its own and before the network, and that
    #: workers may read too; never written (:class:`~.flatfs.FlatFSReader`).
    read_roots: tuple[Path, ...]

    @property
    def corrupt(self) -> Mapping[CID, CorruptBlock]:
        """Local copies found corrupt and set aside, until stored again."""
        ...

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[PeerID] = ()) -> bytes: ...

    async def put(self, cid: CID, data: bytes) -> None: ...

    async def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        """Store blocks the caller has checked, in one go."""
        ...

    async def written(self, cids: Sequence[CID]) -> None:
        """Another process wrote these blocks into :attr:`local_root`: tell
        whoever waits for them."""
        ...

    async def has(self, cid: CID) -> bool:
        """Held here, without asking the network."""
        ...

    async def missing(self, root: CID) -> list[CID]:
        """The blocks of the DAG under ``root`` not held here (intact)."""
        ...

    async def holders(self, cids: Sequence[CID], peers: Sequence[PeerID], *,
                      timeout: float) -> dict[CID, set[PeerID]]:
        """Which of ``peers`` say they hold which of ``cids`` (best effort:
        an empty answer means nothing is known, not that nobody has them)."""
        ...

    async def pin(self, cid: CID, *, recursive: bool = True,
                  timeout: float | None = None) -> None: ...


class Fetcher:
    """A block source that applies one deadline and provider hints to every get.

    UnixFS readers take any :class:`BlockSource`; this one lets them fetch
    a task's input from the peers that have it, within the task's deadline.
    """

    def __init__(self, blocks: BlockStore, timeout: float, providers: Sequence[PeerID] = ()
                 ) -> None:
        self._blocks = blocks
        self._timeout = timeout
        self._providers = list(providers)

    async def get(self, cid: CID, *, timeout: float | None = None) -> bytes:
        return await self._blocks.get(cid, timeout=timeout or self._timeout,
                                      providers=self._providers)


def dag_links(cid: CID, block: bytes) -> list[CID]:
    """The CIDs a block links to (dag-pb only; raw blocks have none)."""
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        return [link.cid for link in decode_node(block).links]
    raise StorageError(f"cannot follow links of a {cid.codec_name} block")


async def fetch_dag(store: BlockSource, root: CID, *, timeout: float | None = None,
                    concurrency: int = 32) -> int:
    """Make every block of a DAG available through ``store``; return the count.

    Siblings are fetched concurrently, which is what makes pulling a large
    file over Bitswap fast: one round trip per tree level, not per block.
    """
    seen: set[CID] = {root}
    count = 0
    limiter = trio.CapacityLimiter(concurrency)

    async def visit(cid: CID, nursery: trio.Nursery) -> None:
        nonlocal count
        async with limiter:
            block = await store.get(cid, timeout=timeout)
        count += 1
        for child in dag_links(cid, block):
            if child not in seen:
                seen.add(child)
                nursery.start_soon(visit, child, nursery)

    with collapsed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(visit, root, nursery)
    return count


class _HeldBlocks(Protocol):
    async def has(self, cid: CID) -> bool: ...

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[PeerID] = ()) -> bytes: ...


async def missing_blocks(store: _HeldBlocks, root: CID) -> list[CID]:
    """:meth:`BlockStore.missing` for a store that can only say ``has``."""
    out = []
    stack = [root]
    seen: set[CID] = set()
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        if not await store.has(cid):
            out.append(cid)
            continue
        stack.extend(dag_links(cid, await store.get(cid)))
    return out
