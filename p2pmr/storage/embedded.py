"""The embedded backend: blocks on local disk, missing ones over Bitswap.

This is the default store of a node: no daemon, just the repo's flatfs
directory and the node's own Bitswap engine. Everything that stores a block
here announces it, so peers waiting on it hear at once.

It may also read other repos' stores on the same disk (:meth:`read_from`),
after its own and before the network: a local peer reads its master's
blocks where they lie. Those stores are never written, and a block found
there is not copied here, except to pin it (a pin keeps a block, and
another repo's blocks are that repo's to keep or drop).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import BlockNotFound, CorruptBlock, NodeError
from .base import fetch_dag, missing_blocks
from .bitswap import Bitswap, want_have_round
from .cid import CID
from .flatfs import FlatFS, FlatFSStore

__all__ = ["EmbeddedStore"]

log = logging.getLogger(__name__)


class EmbeddedStore:
    """A :class:`~p2pmr.storage.base.BlockStore`: flatfs plus Bitswap."""

    def __init__(self, local: FlatFSStore, exchange: Bitswap, *,
                 default_timeout: float = 30.0) -> None:
        self.local = local
        self.exchange = exchange
        self.default_timeout = default_timeout
        self.local_root: Path | None = local.root
        self.read_roots: tuple[Path, ...] = ()
        self._foreign: list[FlatFS] = []
        self._limiter = trio.CapacityLimiter(8)
        self._reported: set[CID] = set()

    def read_from(self, roots: Sequence[str | Path]) -> None:
        """Also read blocks from these repos' stores, in place and read only.

        Each must be a p2pmr repo (a directory with ``blocks/``) other than
        this one; a store that cannot be read is an error now, not a slow
        fetch of every block later.
        """
        for given in roots:
            root = Path(given).resolve()
            if root == self.local.root.resolve():
                raise NodeError(f"--read-store {given} is this node's own repo")
            if not (root / "blocks").is_dir():
                raise NodeError(f"--read-store {given} has no blocks/ directory: not a "
                                f"p2pmr repo")
            if root not in self.read_roots:
                self.read_roots += (root,)
                self._foreign.append(FlatFS(root, read_only=True))
                log.info("reading blocks from %s too (read only)", root)

    @property
    def corrupt(self) -> Mapping[CID, CorruptBlock]:
        return self.local.corrupt

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[PeerID] = ()) -> bytes:
        data = await self.local.get_local(cid)
        if data is None:
            data = await self._read_foreign(cid)
        if data is not None:
            return data
        try:
            return await self.exchange.get(
                cid, timeout=self.default_timeout if timeout is None else timeout,
                providers=providers)
        except BlockNotFound as exc:
            bad = self.local.corrupt.get(cid)
            if bad is None:
                raise
            raise CorruptBlock(cid, bad.path, bad.moved_to,
                               also=f"no peer supplied an intact copy ({exc})") from None

    async def _read_foreign(self, cid: CID) -> bytes | None:
        """The block from another repo's store, checked; None if none has it intact."""
        if not self._foreign:
            return None
        return await trio.to_thread.run_sync(self._read_foreign_sync, cid,
                                             limiter=self._limiter)

    def _read_foreign_sync(self, cid: CID) -> bytes | None:
        for fs in self._foreign:
            try:
                data = fs.read(cid)
            except CorruptBlock as exc:
                # Not ours to move or repair: count it as missing, say so once.
                if cid not in self._reported:
                    self._reported.add(cid)
                    log.warning("not using block %s from %s: %s", cid, fs.root, exc)
                continue
            if data is not None:
                return data
        return None

    async def put(self, cid: CID, data: bytes) -> None:
        await self.local.put(cid, data)
        self.exchange.announce(cid)

    async def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        await self.local.put_many(blocks)
        for cid, _ in blocks:
            self.exchange.announce(cid)

    async def written(self, cids: Sequence[CID]) -> None:
        await self.local.written(cids)
        for cid in cids:
            self.exchange.announce(cid)

    async def holders(self, cids: Sequence[CID], peers: Sequence[PeerID], *,
                      timeout: float) -> dict[CID, set[PeerID]]:
        return await want_have_round(self.exchange, cids, peers, timeout=timeout)

    async def has(self, cid: CID) -> bool:
        """Held here, or intact in a store read from.

        The own store answers from the file's presence: a corrupt copy is
        found, and set aside, when it is read. Another repo's copy is read
        and checked now, because nothing may set it aside: a corrupt one
        would otherwise count as held, and so never be fetched, for ever.
        """
        if await self.local.has(cid):
            return True
        return await self._read_foreign(cid) is not None

    async def missing(self, root: CID) -> list[CID]:
        if not self._foreign:
            return await self.local.missing(root)
        return await missing_blocks(self, root)

    async def pin(self, cid: CID, *, recursive: bool = True,
                  timeout: float | None = None) -> None:
        """Fetch whatever of the DAG is missing, then record the pin.

        A block held only in another repo's store is copied here first: a
        pin keeps its blocks, and that repo may drop them.
        """
        source = _Keeping(self) if self._foreign else self
        if recursive:
            await fetch_dag(source, cid, timeout=timeout)
        else:
            await source.get(cid, timeout=timeout)
        await self.local.pin(cid, recursive=recursive)


class _Keeping:
    """Reads through an embedded store, copying into its own store what was
    found only in another repo's."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    async def get(self, cid: CID, *, timeout: float | None = None) -> bytes:
        data = await self.store.get(cid, timeout=timeout)
        if not await self.store.local.has(cid):
            await self.store.put(cid, data)
        return data
