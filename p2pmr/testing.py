"""A swarm in one process, for fast tests of jobs and of master and peer logic.

No sockets and no processes: the nodes share one block store in memory (as
peers sharing one IPFS daemon do), their streams are in-memory pipes, and
tasks run in threads. The master and the peers are the real ones, speaking
the real protocol through the :class:`~p2pmr.network.Network` seam, so a job
runs here exactly as on a swarm, only faster::

    async with p2pmr.testing.memory_swarm(peers=3) as swarm:
        cid = await swarm.master.add_bytes(b"one line\\n")
        output = await p2pmr.InitMaster(swarm.master, cid, job=wordcount,
                                        n_reducers=2).run()

What this cannot show is anything that crosses a real network or a process
boundary (Bitswap, worker limits, crashes); p2pmr's own test suite keeps
real-process tests for those. User code runs in this process, in threads,
without the worker's CPU and memory limits.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.lowlevel
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID

from ._worker import WorkerLimits
from .errors import BlockNotFound, CorruptBlock, NodeError
from .network import Stream, StreamHandler
from .node import Node
from .peer import Faults, PeerConfig, PeerService, register_protocol
from .storage.base import MAX_BLOCK_SIZE, dag_links, fetch_dag
from .storage.cid import CID

__all__ = ["MemoryBlockStore", "MemoryNetwork", "MemorySwarm", "ThreadWorkers",
           "memory_swarm"]

R = TypeVar("R")


class MemoryBlockStore:
    """A :class:`~p2pmr.storage.base.BlockStore` in a dict, shared by every node."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}  # by multihash, as flatfs keys them
        self.pins: dict[CID, bool] = {}
        self.local_root: Path | None = None
        self.read_roots: tuple[Path, ...] = ()

    @property
    def corrupt(self) -> Mapping[CID, CorruptBlock]:
        return {}

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[PeerID] = ()) -> bytes:
        await trio.lowlevel.checkpoint()
        data = self.blocks.get(cid.multihash)
        if data is None:
            raise BlockNotFound(cid, "not in the swarm's memory")
        return data

    async def put(self, cid: CID, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if len(data) > MAX_BLOCK_SIZE:
            raise ValueError(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
        self.blocks[cid.multihash] = bytes(data)

    async def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        for cid, data in blocks:
            await self.put(cid, data)

    async def written(self, cids: Sequence[CID]) -> None:
        await trio.lowlevel.checkpoint()

    async def holders(self, cids: Sequence[CID], peers: Sequence[PeerID], *,
                      timeout: float) -> dict[CID, set[PeerID]]:
        await trio.lowlevel.checkpoint()  # one store for the whole swarm: no locality
        return {}

    async def has(self, cid: CID) -> bool:
        await trio.lowlevel.checkpoint()
        return cid.multihash in self.blocks

    async def missing(self, root: CID) -> list[CID]:
        out, stack, seen = [], [root], set()
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            data = self.blocks.get(cid.multihash)
            if data is None:
                out.append(cid)
            else:
                stack.extend(dag_links(cid, data))
        await trio.lowlevel.checkpoint()
        return out

    async def pin(self, cid: CID, *, recursive: bool = True,
                  timeout: float | None = None) -> None:
        if recursive:
            await fetch_dag(self, cid, timeout=timeout)
        elif not await self.has(cid):
            raise BlockNotFound(cid, "cannot pin a block that is not stored")
        self.pins[cid] = recursive


class _MemoryStream:
    """One end of an in-memory stream."""

    def __init__(self, stream: trio.StapledStream, remote: PeerID) -> None:
        self._stream = stream
        self._remote = remote

    @property
    def remote_peer(self) -> PeerID:
        return self._remote

    async def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self._stream.receive_some(max_bytes))
        except trio.ClosedResourceError:
            return b""

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def close(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._stream.send_stream.aclose()

    async def reset(self) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._stream.aclose()


@dataclass
class _Hub:
    """Who is in the swarm, what each serves, and who has been cut off."""

    nursery: trio.Nursery
    handlers: dict[PeerID, dict[str, StreamHandler]] = field(default_factory=dict)
    cut_off: set[PeerID] = field(default_factory=set)
    streams: dict[PeerID, list[_MemoryStream]] = field(default_factory=dict)


class MemoryNetwork:
    """A :class:`~p2pmr.network.Network` whose every node is connected to every other."""

    def __init__(self, hub: _Hub) -> None:
        self._hub = hub
        self._peer = PeerID.from_pubkey(create_new_key_pair().public_key)
        hub.handlers[self._peer] = {}

    @property
    def local_peer(self) -> PeerID:
        return self._peer

    def peers_speaking(self, protocol: TProtocol) -> list[PeerID]:
        return [p for p, handlers in self._hub.handlers.items()
                if p != self._peer and str(protocol) in handlers and self.is_connected(p)]

    def is_connected(self, peer: PeerID) -> bool:
        hub = self._hub
        return peer in hub.handlers and peer not in hub.cut_off and self._peer not in hub.cut_off

    async def open_stream(self, peer: PeerID, protocol: TProtocol) -> Stream:
        await trio.lowlevel.checkpoint()
        handler = self._hub.handlers.get(peer, {}).get(str(protocol))
        if handler is None or not self.is_connected(peer):
            raise NodeError(f"{peer} does not serve {protocol}")
        ours, theirs = trio.testing.memory_stream_pair()
        mine, remote = _MemoryStream(ours, peer), _MemoryStream(theirs, self._peer)
        for who, stream in ((self._peer, mine), (peer, remote)):
            self._hub.streams.setdefault(who, []).append(stream)
        self._hub.nursery.start_soon(handler, remote)
        return mine

    def serve(self, protocol: TProtocol, handler: StreamHandler) -> None:
        self._hub.handlers[self._peer][str(protocol)] = handler

    async def announce(self) -> None:
        await trio.lowlevel.checkpoint()

    async def introduce(self, peer: PeerID) -> None:
        await trio.lowlevel.checkpoint()

    def addresses(self, peer: PeerID) -> list[bytes]:
        return []  # every node reaches every other already

    async def reach(self, addrs: Sequence[bytes], *, timeout: float) -> None:
        await trio.lowlevel.checkpoint()


class ThreadWorkers:
    """A worker pool that runs tasks in threads of this process.

    No limits can be enforced on a thread, and a cancelled task runs on,
    its result ignored: for tests, not for untrusted code.
    """

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def run(self, fn: Callable[[Any], R], request: Any) -> R:
        result: R = await trio.to_thread.run_sync(  # type: ignore[call-arg]
            fn, request, abandon_on_cancel=True)
        return result


@dataclass
class MemorySwarm:
    """A master node and its peers, in memory."""

    master: Node
    peers: list[Node]
    services: list[PeerService]
    _hub: _Hub
    _store: MemoryBlockStore
    _base: Path

    async def add_peer(self, *, faults: Faults | None = None, workers: int = 1,
                       trusted: bool = True) -> Node:
        """Another peer, trusting the master (unless ``trusted`` is False)."""
        network = MemoryNetwork(self._hub)
        repo = self._base / f"peer-{len(self.peers)}"
        repo.mkdir()
        node = Node(network, repo, self._store, self._hub.nursery)
        config = PeerConfig(workers=workers, limits=WorkerLimits(memory_bytes=None,
                                                                  cpu_seconds=None))
        service = register_protocol(node, trust=[self.master.peer_id] if trusted else [],
                                    config=config, faults=faults, pool=ThreadWorkers())
        self.peers.append(node)
        self.services.append(service)
        await trio.lowlevel.checkpoint()
        return node

    def disconnect(self, node: Node) -> None:
        """Cut a node off, as if its machine went away; its streams break."""
        self._hub.cut_off.add(node.peer_id)
        for stream in self._hub.streams.pop(node.peer_id, []):
            self._hub.nursery.start_soon(stream.reset)


@contextlib.asynccontextmanager
async def memory_swarm(peers: int = 2, *, workers: int = 1) -> AsyncIterator[MemorySwarm]:
    """A master and ``peers`` peers in memory, for the duration of the block."""
    base = Path(tempfile.mkdtemp(prefix="p2pmr-memory-"))
    try:
        async with trio.open_nursery() as nursery:
            hub = _Hub(nursery)
            store = MemoryBlockStore()
            (base / "master").mkdir()
            master = Node(MemoryNetwork(hub), base / "master", store, nursery)
            swarm = MemorySwarm(master, [], [], hub, store, base)
            for _ in range(peers):
                await swarm.add_peer(workers=workers)
            try:
                yield swarm
            finally:
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(base, ignore_errors=True)
