"""The seam between p2pmr's protocol code and the network it runs on.

The master and the peer speak ``/ipfs/mapreduce/1.0.0`` over a
:class:`Network` of :class:`Stream` objects and nothing else: not
py-libp2p's host, connections or stream classes. :class:`Libp2pNetwork` is
the real one, over a node's libp2p host; :mod:`p2pmr.testing` has one in
memory, so that master and peer logic can be tested in one process without
sockets (httpx's transports are the model).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from ._libp2p import close_quietly, protocols_of
from .addresses import dialable, ip_of
from .identify import push_all

if TYPE_CHECKING:
    from .storage.kubo import KuboStore

__all__ = ["Libp2pNetwork", "Libp2pStream", "Network", "Stream", "StreamHandler"]

log = logging.getLogger(__name__)


class Stream(Protocol):
    """One bidirectional stream to :attr:`remote_peer`, authenticated by the network."""

    @property
    def remote_peer(self) -> PeerID: ...

    async def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; ``b""`` once the other side has finished writing."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Finish, quietly and within a short deadline, whatever state it is in."""
        ...

    async def reset(self) -> None:
        """Abort, quietly and within a short deadline."""
        ...


StreamHandler = Callable[[Stream], Awaitable[None]]


class Network(Protocol):
    """Who is there, and streams to them."""

    @property
    def local_peer(self) -> PeerID: ...

    def peers_speaking(self, protocol: TProtocol) -> list[PeerID]:
        """Connected peers known to speak ``protocol``."""
        ...

    def is_connected(self, peer: PeerID) -> bool: ...

    async def open_stream(self, peer: PeerID, protocol: TProtocol) -> Stream:
        """A new stream; raises on failure (the caller bounds the wait)."""
        ...

    def serve(self, protocol: TProtocol, handler: StreamHandler) -> None:
        """Hand every inbound stream of ``protocol`` to ``handler``."""
        ...

    async def announce(self) -> None:
        """Tell connected peers what this node now serves."""
        ...

    async def introduce(self, peer: PeerID) -> None:
        """Let the block store reach ``peer`` directly (a daemon's own swarm)."""
        ...

    def addresses(self, peer: PeerID) -> list[bytes]:
        """Binary multiaddrs, each ending in ``/p2p/<peer>``, at which others
        may dial ``peer``: what a master tells a reducer about the peers that
        hold its inputs."""
        ...

    async def reach(self, addrs: Sequence[bytes], *, timeout: float) -> None:
        """Connect, best effort and within ``timeout``, to the peers named by
        ``addrs`` that we are not connected to: block exchange only asks
        connected peers."""
        ...


class Libp2pStream:
    """A :class:`Stream` over a py-libp2p stream."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    @property
    def remote_peer(self) -> PeerID:
        peer: PeerID = self._stream.muxed_conn.peer_id
        return peer

    async def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self._stream.read(max_bytes))
        except EOFError:  # py-libp2p's StreamEOF and MuxedStreamEOF: the end, cleanly
            return b""

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        await close_quietly(self._stream)

    async def reset(self) -> None:
        await close_quietly(self._stream, reset=True)


class Libp2pNetwork:
    """The :class:`Network` of a node's libp2p host."""

    def __init__(self, host: IHost, kubo: KuboStore | None = None) -> None:
        self.host = host
        self.kubo = kubo

    @property
    def local_peer(self) -> PeerID:
        return self.host.get_id()

    def connected(self) -> list[PeerID]:
        return list(self.host.get_network().connections.keys())

    def peers_speaking(self, protocol: TProtocol) -> list[PeerID]:
        return [p for p in self.connected() if str(protocol) in protocols_of(self.host, p)]

    def is_connected(self, peer: PeerID) -> bool:
        return bool(self.host.get_network().connections.get(peer))

    async def open_stream(self, peer: PeerID, protocol: TProtocol) -> Stream:
        return Libp2pStream(await self.host.new_stream(peer, [protocol]))

    def serve(self, protocol: TProtocol, handler: StreamHandler) -> None:
        async def handle(stream: INetStream) -> None:
            await handler(Libp2pStream(stream))

        self.host.set_stream_handler(protocol, handle)

    async def announce(self) -> None:
        # Peers we are already connected to (a master we bootstrapped to,
        # say) ran identify before we served anything: push it again.
        await push_all(self.host)

    async def introduce(self, peer: PeerID) -> None:
        """With a Kubo daemon, have it dial a peer we talk to, so the two can
        exchange blocks directly; nothing to do for the embedded store."""
        if self.kubo is None:
            return
        try:
            addrs = self.host.get_peerstore().addrs(peer)
        except Exception:
            addrs = []
        for addr in addrs:
            text = str(addr)
            if "/p2p/" not in text:
                text += f"/p2p/{peer}"
            if await self.kubo.swarm_connect(text):
                return

    def addresses(self, peer: PeerID) -> list[bytes]:
        try:
            addrs = self.host.get_peerstore().addrs(peer)
        except Exception:  # a peer we know nothing about
            return []
        # Wildcards reach the dialler's own host; loopback goes last, as it
        # only helps a dialler on the peer's machine (p2pmr.addresses).
        usable = dialable(addrs, local_ok=True)
        usable.sort(key=lambda a: (ip := ip_of(a)) is not None and ip.is_loopback)
        out = []
        for addr in usable[:4]:
            text = str(addr)
            if "/p2p/" not in text:
                text += f"/p2p/{peer}"
            try:
                out.append(Multiaddr(text).to_bytes())
            except Exception:
                continue
        return out

    async def reach(self, addrs: Sequence[bytes], *, timeout: float) -> None:
        wanted: dict[PeerID, list[Multiaddr]] = {}
        for raw in addrs:
            try:
                addr = Multiaddr(raw)
                peer = PeerID.from_base58(addr.value_for_protocol("p2p"))
            except Exception:
                continue  # a hint we cannot use is no error
            if peer != self.local_peer and not self.is_connected(peer):
                wanted.setdefault(peer, []).append(addr.decapsulate(Multiaddr(f"/p2p/{peer}")))
        if not wanted:
            return

        limiter = trio.CapacityLimiter(16)

        async def dial(peer: PeerID, where: list[Multiaddr]) -> None:
            try:
                async with limiter:
                    await self.host.connect(PeerInfo(peer, where))
            except Exception as exc:
                log.info("could not reach provider %s: %s", peer, exc)
                return
            if self.kubo is not None:
                for addr in where:
                    if await self.kubo.swarm_connect(f"{addr}/p2p/{peer}"):
                        break

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for peer, where in wanted.items():
                    nursery.start_soon(dial, peer, where)
