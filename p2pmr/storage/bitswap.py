"""Block exchange with Bitswap 1.0/1.1/1.2, interoperable with Kubo.

Built on py-libp2p's ``libp2p.bitswap``: its stream handlers, message parsing
and protobuf messages. We replace the parts of its engine that decide what to
send, when and on which stream, because upstream (0.8.1) gets these wrong:

* It answers a wantlist on the stream the requester opened. Kubo never reads
  the streams it opens for sending wants; it expects replies on a stream the
  responder opens. So every reply here goes through :class:`_PeerSender`,
  which owns one outbound stream per peer.
* It writes an empty CID prefix for CIDv0 blocks in Bitswap 1.1/1.2 block
  messages. Kubo then cannot rebuild the CID. The prefix of a CIDv0 is
  ``00 70 12 20`` (version 0, dag-pb, sha2-256, 32 bytes); see
  :attr:`p2pmr.storage.cid.CID.prefix`.
* It stores any block a peer sends, wanted or not. Here a received block is
  hashed, matched against our own wants by multihash, and dropped unless it
  is wanted, so a peer can neither fill our disk nor slip in wrong bytes.
* Its sessions poll once a second. Here a want wakes as soon as a presence
  or the block arrives.

One sender task per peer writes every message to that peer, so concurrent
writers never interleave yamux frames of different messages, and it reads a
block from disk only just before sending it, so a peer that asks for many
blocks costs one block of memory, not all of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio
import trio.lowlevel
from libp2p.abc import IHost, INetStream
from libp2p.bitswap.client import BitswapClient
from libp2p.bitswap.config import (
    BITSWAP_PROTOCOL_V100,
    BITSWAP_PROTOCOL_V110,
    BITSWAP_PROTOCOL_V120,
)
from libp2p.bitswap.messages import create_message, create_wantlist_entry
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID

from .._libp2p import close_quietly, protocols_of
from ..errors import BlockNotFound, CIDError
from .base import MAX_BLOCK_SIZE
from .cid import CID, DAG_PB, SHA2_256
from .flatfs import FlatFSStore
from .varint import decode_uvarint, encode_uvarint

__all__ = ["Bitswap", "BitswapStats", "want_have_round"]

log = logging.getLogger(__name__)

PROTOCOLS: Final = (BITSWAP_PROTOCOL_V120, BITSWAP_PROTOCOL_V110, BITSWAP_PROTOCOL_V100)

_WANT_BLOCK: Final = 0
_WANT_HAVE: Final = 1
# Kubo answers want-have with the block itself when it is this small.
_SEND_SMALL_BLOCK_FOR_HAVE: Final = 1024
# A want-block that has produced neither block nor DONT_HAVE for this long is
# given up on that peer, and the next peer that said HAVE is asked.
_BLOCK_REQUEST_PATIENCE: Final = 5.0
# How often a pending want re-examines peers (new connections, retries).
_REEXAMINE: Final = 1.0
# Ask a DONT_HAVE peer again after this long: it may have the block by now.
_REASK_DONT_HAVE: Final = 3.0
# Bounds on what one remote peer can make us remember or queue.
_MAX_LEDGER_ENTRIES: Final = 4096
_MAX_QUEUED_BLOCKS: Final = 4096
_STREAM_OPEN_TIMEOUT: Final = 10.0
_WRITE_TIMEOUT: Final = 30.0


@dataclass
class BitswapStats:
    blocks_received: int = 0
    bytes_received: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    unwanted_blocks: int = 0
    duplicate_blocks: int = 0


@dataclass(eq=False)
class _Want:
    cid: CID
    refs: int = 0
    said_no: dict[PeerID, int] = field(default_factory=dict)  # DONT_HAVE answers per peer
    data: bytes | None = None   # verified bytes, as soon as they arrive
    stored: bool = False        # and once they are on disk
    changed: trio.Event = field(default_factory=trio.Event)
    have: list[PeerID] = field(default_factory=list)
    dont_have: dict[PeerID, float] = field(default_factory=dict)
    asked_have: dict[PeerID, float] = field(default_factory=dict)
    asked_block: dict[PeerID, float] = field(default_factory=dict)

    def signal(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def forget(self, peer: PeerID) -> None:
        """The peer is gone: whatever it said or was asked no longer counts."""
        if peer in self.have:
            self.have.remove(peer)
        self.asked_block.pop(peer, None)
        self.asked_have.pop(peer, None)
        self.signal()

    def nobody_has(self, connected: list[PeerID]) -> bool:
        """Every connected peer said twice it does not have it; none said it has."""
        if self.have:
            return False
        return bool(connected) and all(self.said_no.get(p, 0) >= 2 for p in connected)

    def why(self, timeout: float, connected: list[PeerID]) -> str:
        asked = len(set(self.asked_block) | set(self.asked_have))
        if not asked:
            return f"no connected peer to ask within {timeout:g}s"
        if self.nobody_has(connected):
            return f"none of the {asked} peer(s) asked has it"
        return (f"asked {asked} peer(s) for {timeout:g}s; {len(self.dont_have)} "
                f"said they do not have it")


@dataclass(eq=False)
class _LedgerEntry:
    cid: CID
    want_type: int
    send_dont_have: bool


class _PeerSender:
    """Sole writer of Bitswap messages to one remote peer."""

    def __init__(self, engine: Bitswap, peer: PeerID) -> None:
        self.engine = engine
        self.peer = peer
        self.wants: dict[bytes, tuple[int, bool]] = {}
        self.cancels: set[bytes] = set()
        self.presences: dict[bytes, bool] = {}
        self.blocks: OrderedDict[bytes, CID] = OrderedDict()  # multihash -> CID
        self.wake = trio.Event()
        self.stream: INetStream | None = None
        self.protocol: str | None = None
        self.closed = False

    def want(self, cid: CID, want_type: int) -> None:
        raw = bytes(cid)
        self.cancels.discard(raw)
        self.wants[raw] = (want_type, True)
        self.wake.set()

    def cancel(self, cid: CID) -> None:
        raw = bytes(cid)
        self.wants.pop(raw, None)
        self.cancels.add(raw)
        self.wake.set()

    def presence(self, cid: CID, has: bool) -> None:
        self.presences[bytes(cid)] = has
        self.wake.set()

    def send_block(self, cid: CID) -> None:
        if len(self.blocks) >= _MAX_QUEUED_BLOCKS:
            log.warning("peer %s has %d blocks queued; dropping request for %s",
                        self.peer, len(self.blocks), cid)
            return
        self.blocks[cid.multihash] = cid
        self.wake.set()

    def unqueue_block(self, cid: CID) -> None:
        self.blocks.pop(cid.multihash, None)

    async def run(self) -> None:
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake = trio.Event()
                await trio.lowlevel.checkpoint()  # let a burst of wants coalesce
                await self._flush()
        finally:
            await self._close_stream()

    async def _flush(self) -> None:
        if self.wants or self.cancels or self.presences:
            entries = [create_wantlist_entry(raw, priority=1, cancel=False, want_type=wt,
                                             send_dont_have=sdh)
                       for raw, (wt, sdh) in self.wants.items()]
            entries += [create_wantlist_entry(raw, priority=1, cancel=True)
                        for raw in self.cancels]
            presences = list(self.presences.items())
            self.wants.clear()
            self.cancels.clear()
            self.presences.clear()
            msg = create_message(wantlist_entries=entries or None,
                                 block_presences=presences or None)
            if not await self._write(msg):
                return
        while self.blocks and not self.closed:
            _, cid = self.blocks.popitem(last=False)
            data = await self.engine.store.get_local(cid)
            if data is None:
                # Gone, or corrupt and just set aside: say so rather than
                # leave the peer waiting, and find an intact copy.
                self.engine.lost_block(self.peer, cid)
                continue
            if self.protocol == BITSWAP_PROTOCOL_V100:
                msg = create_message(blocks_v100=[data])
            else:
                msg = create_message(blocks_v110=[(cid.prefix, data)])
            if not await self._write(msg):
                return
            self.engine.stats.blocks_sent += 1
            self.engine.stats.bytes_sent += len(data)

    async def _write(self, msg: Message) -> bool:
        payload = msg.SerializeToString()
        frame = encode_uvarint(len(payload)) + payload
        for attempt in (1, 2):
            stream = await self._open()
            if stream is None:
                break
            try:
                with trio.fail_after(_WRITE_TIMEOUT):
                    await stream.write(frame)
                return True
            except Exception as exc:  # any stream failure: reopen once
                log.debug("bitswap write to %s failed (attempt %d): %s", self.peer, attempt, exc)
                await self._close_stream()
        self.blocks.clear()
        return False

    def _live(self, stream: INetStream) -> bool:
        """The stream runs on the peer's newest connection.

        A peer that reconnects (a restarted master, say) gets a new
        connection while the old one may linger, never reporting its end,
        and upstream forgets per-peer state only when the *last* connection
        closes; a stream on the old one swallows writes without an error.
        """
        conns = self.engine.host.get_network().connections.get(self.peer) or []
        return bool(conns) and getattr(conns[-1], "muxed_conn", None) is \
            getattr(stream, "muxed_conn", None)

    async def _open(self) -> INetStream | None:
        if self.stream is not None:
            if self._live(self.stream):
                return self.stream
            await self._close_stream()
        try:
            with trio.fail_after(_STREAM_OPEN_TIMEOUT):
                stream = await self.engine.host.new_stream(
                    self.peer, [TProtocol(p) for p in PROTOCOLS])
        except Exception as exc:
            log.debug("cannot open bitswap stream to %s: %s", self.peer, exc)
            return None
        self.stream = stream
        self.protocol = str(stream.get_protocol())
        log.debug("opened a bitswap stream to %s (%s)", self.peer, self.protocol)
        # Peers running py-libp2p's stock client answer on this stream.
        self.engine.spawn(self.engine._read_replies, stream, self.peer)
        return stream

    async def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await close_quietly(stream)


def _cid_from_prefix(prefix: bytes, data: bytes) -> CID:
    """Rebuild a block's CID from its Bitswap prefix and bytes (hashing them)."""
    if not prefix:  # what py-libp2p 0.8.1 sends for CIDv0
        return CID.hash(data)
    version, pos = decode_uvarint(prefix, 0)
    codec, pos = decode_uvarint(prefix, pos)
    hash_code, pos = decode_uvarint(prefix, pos)
    _length, pos = decode_uvarint(prefix, pos)
    if version == 0:
        if codec != DAG_PB or hash_code != SHA2_256:
            raise CIDError("bad CIDv0 prefix")
        return CID.hash(data)
    return CID.hash(data, version=1, codec=codec, hash_code=hash_code)


class Bitswap(BitswapClient):  # type: ignore[misc]
    """A Bitswap engine over a :class:`FlatFSStore`.

    Start it with :meth:`run` inside a nursery; fetch with :meth:`get`; call
    :meth:`announce` after storing a block so peers waiting for it get it.
    """

    def __init__(self, host: IHost, store: FlatFSStore) -> None:
        super().__init__(host, block_store=None, protocol_version=BITSWAP_PROTOCOL_V120)
        self.supported_protocols = list(PROTOCOLS)
        self.store = store
        self.stats = BitswapStats()
        self._wants: dict[bytes, _Want] = {}
        self._senders: dict[PeerID, _PeerSender] = {}
        self._ledgers: dict[PeerID, dict[bytes, _LedgerEntry]] = {}
        self._suppliers: OrderedDict[PeerID, None] = OrderedDict()
        self._own_nursery: trio.Nursery | None = None
        self._store_limiter = trio.CapacityLimiter(8)
        self._repairing: set[bytes] = set()

    # -- lifecycle ------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._own_nursery = nursery
            self.set_nursery(nursery)
            await self.start()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for sender in self._senders.values():
                    sender.closed = True
                    sender.wake.set()
                with trio.CancelScope(shield=True):
                    await self.stop()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        if self._own_nursery is not None:
            self._own_nursery.start_soon(fn, *args)

    async def disconnected(self, network: Any, conn: Any) -> None:
        # Drop our stream if it ran on this connection, even when the peer
        # has another connection by now (upstream then keeps its state).
        muxed = getattr(conn, "muxed_conn", None)
        peer = getattr(muxed, "peer_id", None)
        sender = self._senders.get(peer) if peer is not None else None
        if sender is not None and sender.stream is not None and \
                getattr(sender.stream, "muxed_conn", None) is muxed:
            sender.stream = None
            sender.wake.set()
        await super().disconnected(network, conn)

    def cleanup_peer(self, peer_id: PeerID) -> None:
        super().cleanup_peer(peer_id)
        self._ledgers.pop(peer_id, None)
        self._suppliers.pop(peer_id, None)
        sender = self._senders.pop(peer_id, None)
        if sender is not None:
            sender.closed = True
            sender.wake.set()
        for want in self._wants.values():
            want.forget(peer_id)

    def _sender(self, peer: PeerID) -> _PeerSender:
        sender = self._senders.get(peer)
        if sender is None or sender.closed:
            sender = _PeerSender(self, peer)
            self._senders[peer] = sender
            self.spawn(sender.run)
        return sender

    def peers(self) -> list[PeerID]:
        """Connected peers that may speak Bitswap."""
        out = []
        for peer in list(self.host.get_network().connections.keys()):
            protocols = protocols_of(self.host, peer)
            if not protocols or any(p.startswith("/ipfs/bitswap/") for p in protocols):
                out.append(peer)
        return out

    # -- fetching ---------------------------------------------------------------

    async def get(self, cid: CID, *, timeout: float = 30.0,
                  providers: Sequence[PeerID] = ()) -> bytes:
        """Fetch a block from connected peers, store it, and return it.

        Raises :class:`BlockNotFound` after ``timeout`` seconds, or sooner
        once every connected peer has said twice (the second time when asked
        again, ``_REASK_DONT_HAVE`` later) that it does not have the block:
        waiting longer would only wait for a peer that may never come.
        Received bytes are only ever accepted if they hash to ``cid``.
        """
        data = await self.store.get_local(cid)
        if data is not None:
            return data
        key = cid.multihash
        want = self._wants.get(key)
        if want is None:
            want = self._wants[key] = _Want(cid)
        want.refs += 1
        try:
            with trio.move_on_after(timeout):
                while not want.stored:
                    if want.data is None:
                        if want.nobody_has(self.peers()):
                            break
                        self._advance(want, providers)
                    with trio.move_on_after(_REEXAMINE):
                        await want.changed.wait()
            if want.data is None or not want.stored:
                raise BlockNotFound(cid, want.why(timeout, self.peers()))
            return want.data
        finally:
            want.refs -= 1
            if want.refs == 0:
                self._wants.pop(key, None)
                if want.data is None:
                    for peer in set(want.asked_block) | set(want.asked_have):
                        if peer in self._senders:
                            self._senders[peer].cancel(cid)

    def _advance(self, want: _Want, providers: Sequence[PeerID]) -> None:
        now = trio.current_time()
        connected = self.peers()
        if not connected:
            return
        connected_set = set(connected)
        # Preferred peers: explicit providers, then whoever delivered last.
        preferred = [p for p in providers if p in connected_set]
        for supplier in reversed(self._suppliers):
            if supplier in connected_set and supplier not in preferred:
                preferred.append(supplier)
                break
        outstanding = any(now - t < _BLOCK_REQUEST_PATIENCE and p not in want.dont_have
                          for p, t in want.asked_block.items())
        for peer in preferred:
            if peer not in want.asked_block and peer not in want.dont_have:
                self._ask(want, peer, _WANT_BLOCK, now)
                outstanding = True
        # Discover who has it.
        for peer in connected:
            told_no = want.dont_have.get(peer)
            if peer in want.asked_block or peer in want.asked_have:
                if told_no is None or now - told_no < _REASK_DONT_HAVE:
                    continue
                del want.dont_have[peer]
                want.asked_block.pop(peer, None)
            self._ask(want, peer, _WANT_HAVE, now)
        # Ask one HAVE peer at a time for the block itself.
        if not outstanding:
            for peer in want.have:
                if peer in connected_set and peer not in want.asked_block:
                    self._ask(want, peer, _WANT_BLOCK, now)
                    break
            else:
                # Everyone who said HAVE was asked; retry the stalest.
                stale = [p for p in want.have if p in connected_set
                         and now - want.asked_block.get(p, 0) >= _BLOCK_REQUEST_PATIENCE]
                if stale:
                    self._ask(want, stale[0], _WANT_BLOCK, now)

    def _ask(self, want: _Want, peer: PeerID, want_type: int, now: float) -> None:
        log.debug("asking %s for %s (%s)", peer, want.cid,
                  "block" if want_type == _WANT_BLOCK else "have")
        if want_type == _WANT_BLOCK:
            want.asked_block[peer] = now
        else:
            want.asked_have[peer] = now
        self._sender(peer).want(want.cid, want_type)

    # -- announcing -------------------------------------------------------------

    def lost_block(self, peer: PeerID, cid: CID) -> None:
        """A block we offered ``peer`` is not in the store after all.

        Tell the peer (a DONT_HAVE lets it look elsewhere at once), keep its
        want on the ledger, and if our copy was corrupt, fetch an intact one
        from whoever has it: the peer then gets it through :meth:`announce`.
        """
        sender = self._senders.get(peer)
        if sender is not None and sender.protocol == BITSWAP_PROTOCOL_V120:
            sender.presence(cid, False)
        ledger = self._ledgers.setdefault(peer, {})
        if len(ledger) < _MAX_LEDGER_ENTRIES:
            ledger[cid.multihash] = _LedgerEntry(cid, _WANT_BLOCK, True)
        if cid in self.store.corrupt and cid.multihash not in self._repairing:
            self._repairing.add(cid.multihash)
            self.spawn(self._repair, cid)

    async def _repair(self, cid: CID) -> None:
        try:
            await self.get(cid, timeout=60.0)
            log.warning("replaced the corrupt copy of %s with an intact one from a peer", cid)
        except BlockNotFound as exc:
            log.error("block %s is corrupt here and no peer has an intact copy: %s", cid, exc)
        finally:
            self._repairing.discard(cid.multihash)

    def announce(self, cid: CID) -> None:
        """A block was stored locally: serve peers whose ledger wants it."""
        key = cid.multihash
        for peer, ledger in self._ledgers.items():
            entry = ledger.pop(key, None)
            if entry is None:
                continue
            if entry.want_type == _WANT_BLOCK:
                self._sender(peer).send_block(entry.cid)
            else:
                self._sender(peer).presence(entry.cid, True)

    # -- upstream hooks: inbound messages ------------------------------------------

    def _on_message_queue_stream_opened(self, stream: INetStream, peer_id: PeerID) -> None:
        # Upstream's message queues are not used; see _PeerSender.
        return None

    async def _read_replies(self, stream: INetStream, peer: PeerID) -> None:
        # This task lives in the engine's own nursery: whatever a peer sends
        # on our stream may end the stream, never the node.
        try:
            while True:
                msg = await self._read_message(stream)
                if msg is None:
                    return
                await self._process_message(msg, peer, stream)
        except Exception as exc:
            log.warning("dropping the bitswap stream to %s: %s: %s", peer,
                        type(exc).__name__, exc)
            await close_quietly(stream, reset=True)

    async def _process_wantlist(self, wantlist: Any, peer_id: PeerID, stream: INetStream) -> None:
        ledger = self._ledgers.setdefault(peer_id, {})
        if wantlist.full:
            ledger.clear()
        sender = self._sender(peer_id)
        if stream.get_protocol() == BITSWAP_PROTOCOL_V100:
            sender.protocol = sender.protocol or BITSWAP_PROTOCOL_V100
        for entry in wantlist.entries:
            try:
                cid = CID.from_bytes(bytes(entry.block))
            except CIDError:
                continue
            key = cid.multihash
            if entry.cancel:
                ledger.pop(key, None)
                sender.unqueue_block(cid)
                continue
            want_type = int(entry.wantType)
            try:  # one stat says both whether we have it and how big it is
                size = self.store.path_of(cid).stat().st_size
            except FileNotFoundError:
                size = None
            if size is not None:
                if want_type == _WANT_BLOCK or size <= _SEND_SMALL_BLOCK_FOR_HAVE:
                    sender.send_block(cid)
                else:
                    sender.presence(cid, True)
                continue
            if len(ledger) < _MAX_LEDGER_ENTRIES:
                ledger[key] = _LedgerEntry(cid, want_type, bool(entry.sendDontHave))
            if entry.sendDontHave:
                sender.presence(cid, False)

    async def _process_blocks_v100(self, blocks: list[bytes], peer_id: PeerID) -> None:
        for data in blocks:
            data = bytes(data)
            key = b"\x12\x20" + hashlib.sha256(data).digest()
            await self._receive(key, data, peer_id)

    async def _process_blocks_v110(self, blocks: Sequence[Any], peer_id: PeerID) -> None:
        for block in blocks:
            data = bytes(block.data)
            try:
                cid = _cid_from_prefix(bytes(block.prefix), data)
            except (CIDError, ValueError) as exc:
                log.debug("peer %s sent a block with a bad prefix: %s", peer_id, exc)
                continue
            await self._receive(cid.multihash, data, peer_id)

    async def _receive(self, key: bytes, data: bytes, peer: PeerID) -> None:
        # The key was computed by hashing ``data``, so a match with a want is
        # a verified block: it cannot be anything but the bytes we asked for.
        want = self._wants.get(key)
        if want is None:
            self.stats.unwanted_blocks += 1
            log.debug("dropping unwanted block from %s", peer)
            return
        if want.data is not None:
            self.stats.duplicate_blocks += 1
            return
        if len(data) > MAX_BLOCK_SIZE:
            log.warning("peer %s sent an oversized block", peer)
            return
        # Store it in the background: writing to disk here would stop this
        # stream's reader, and with it every block behind this one.
        want.data = data
        self.spawn(self._store_received, want)
        self.stats.blocks_received += 1
        self.stats.bytes_received += len(data)
        self._suppliers.pop(peer, None)
        self._suppliers[peer] = None
        while len(self._suppliers) > 8:
            self._suppliers.popitem(last=False)
        # Others asked may still send it; tell them not to.
        for other in set(want.asked_block) | set(want.asked_have):
            if other != peer and other in self._senders:
                self._senders[other].cancel(want.cid)

    async def _store_received(self, want: _Want) -> None:
        data = want.data
        assert data is not None
        try:
            async with self._store_limiter:
                await self.store.put(want.cid, data)
        except Exception as exc:  # a full or failing disk: the want stays open
            log.error("cannot store block %s: %s", want.cid, exc)
            want.data = None
        else:
            want.stored = True
            self.announce(want.cid)
        want.signal()

    async def _process_block_presences(self, presences: Sequence[Any], peer_id: PeerID) -> None:
        now = trio.current_time()
        for presence in presences:
            try:
                cid = CID.from_bytes(bytes(presence.cid))
            except CIDError:
                continue
            want = self._wants.get(cid.multihash)
            if want is None:
                continue
            if presence.type == Message.Have:
                if peer_id not in want.have:
                    want.have.append(peer_id)
                want.dont_have.pop(peer_id, None)
                want.said_no.pop(peer_id, None)
            else:
                want.dont_have[peer_id] = now
                want.said_no[peer_id] = want.said_no.get(peer_id, 0) + 1
                if peer_id in want.have:
                    want.have.remove(peer_id)
            want.signal()


async def want_have_round(engine: Bitswap, cids: Sequence[CID], peers: Sequence[PeerID], *,
                          timeout: float) -> dict[CID, set[PeerID]]:
    """Which of ``peers`` hold which of ``cids``, by one round of want-have.

    No block is asked for: each peer answers HAVE or DONT_HAVE for every
    CID in one message, so asking costs a few bytes a block whatever the
    blocks' size. Returns what was said within ``timeout``; a peer that
    said nothing counts as holding nothing. The wants are cancelled after,
    so no peer is left owing an answer.
    """
    connected = set(engine.peers())
    asked = [p for p in dict.fromkeys(peers) if p in connected]
    wants: list[_Want] = []
    for cid in dict.fromkeys(cids):
        want = engine._wants.get(cid.multihash)
        if want is None:
            want = engine._wants[cid.multihash] = _Want(cid)
        want.refs += 1
        wants.append(want)
    try:
        now = trio.current_time()
        for want in wants:
            for peer in asked:
                if peer not in want.have and peer not in want.asked_have:
                    engine._ask(want, peer, _WANT_HAVE, now)
        with trio.move_on_after(timeout):
            for want in wants:
                while not all(p in want.have or p in want.dont_have for p in asked):
                    await want.changed.wait()
        return {w.cid: {p for p in w.have if p in asked} for w in wants if w.have}
    finally:
        for want in wants:
            want.refs -= 1
            if want.refs == 0:
                engine._wants.pop(want.cid.multihash, None)
                for peer in asked:
                    if peer in engine._senders:
                        engine._senders[peer].cancel(want.cid)
