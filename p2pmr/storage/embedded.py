"""The embedded backend: blocks on local disk, missing ones over Bitswap.

This is the default store of a node: no daemon, just the repo's flatfs
directory and the node's own Bitswap engine. Everything that stores a block
here announces it, so peers waiting on it hear at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from libp2p.peer.id import ID as PeerID

from ..errors import BlockNotFound, CorruptBlock
from .base import fetch_dag
from .bitswap import Bitswap, want_have_round
from .cid import CID
from .flatfs import FlatFSStore

__all__ = ["EmbeddedStore"]


class EmbeddedStore:
    """A :class:`~p2pmr.storage.base.BlockStore`: flatfs plus Bitswap."""

    def __init__(self, local: FlatFSStore, exchange: Bitswap, *,
                 default_timeout: float = 30.0) -> None:
        self.local = local
        self.exchange = exchange
        self.default_timeout = default_timeout
        self.local_root: Path | None = local.root

    @property
    def corrupt(self) -> Mapping[CID, CorruptBlock]:
        return self.local.corrupt

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[PeerID] = ()) -> bytes:
        data = await self.local.get_local(cid)
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
        return await self.local.has(cid)

    async def missing(self, root: CID) -> list[CID]:
        return await self.local.missing(root)

    async def pin(self, cid: CID, *, recursive: bool = True,
                  timeout: float | None = None) -> None:
        """Fetch whatever of the DAG is missing, then record the pin."""
        if recursive:
            await fetch_dag(self, cid, timeout=timeout)
        else:
            await self.get(cid, timeout=timeout)
        await self.local.pin(cid, recursive=recursive)
