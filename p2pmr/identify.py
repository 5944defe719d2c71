"""libp2p identify, answered for each peer with the addresses it can reach.

py-libp2p tells every peer the same list, which includes loopback and, for
a node listening on ``0.0.0.0``, the wildcard itself; a peer on another
machine stores those and later redials them, reaching itself instead of
us. Here the answer (and every identify push) is cut to measure for the
connection it goes out on (:func:`p2pmr.addresses.for_remote`). The signed
peer record is left out: it would carry the full list, and identify already
runs over the Noise-authenticated connection.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.identity.identify.identify import AGENT_VERSION, PROTOCOL_VERSION
from libp2p.identity.identify.identify import ID as IDENTIFY
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.id import ID as PeerID
from libp2p.utils import varint
from multiaddr import Multiaddr
from multiaddr.protocols import P_P2P

from ._libp2p import close_quietly
from .addresses import for_remote

__all__ = ["install", "message_for", "push_all"]

log = logging.getLogger(__name__)

_PUSH_TIMEOUT = 5.0


def _remote_of(stream: INetStream) -> tuple[str, int] | None:
    try:
        return stream.get_remote_address()
    except Exception:
        return None


def message_for(host: IHost, remote: tuple[str, int] | None) -> bytes:
    """The length-prefixed identify message for a peer at ``remote``."""
    ours = [addr.decapsulate_code(P_P2P) for addr in host.get_addrs()]
    observed = b""
    if remote is not None:
        ip, port = remote
        ip = ip.removeprefix("::ffff:")
        proto = "ip6" if ":" in ip else "ip4"
        observed = Multiaddr(f"/{proto}/{ip}/tcp/{port}").to_bytes()
    message = Identify(
        protocol_version=PROTOCOL_VERSION,
        agent_version=AGENT_VERSION,
        public_key=host.get_public_key().serialize(),
        listen_addrs=[a.to_bytes() for a in for_remote(ours, remote[0] if remote else None)],
        observed_addr=observed,
        protocols=[str(p) for p in host.get_mux().get_protocols() if p is not None],
    )
    body = message.SerializeToString()
    return bytes(varint.encode_uvarint(len(body))) + body


async def _send(host: IHost, stream: INetStream) -> None:
    """Write the identify message for the stream's peer, then close it (or,
    on failure, reset it): the same for an answer and for a push."""
    try:
        await stream.write(message_for(host, _remote_of(stream)))
    except Exception as exc:
        log.debug("identify for %s: %s", stream.muxed_conn.peer_id, exc)
        await close_quietly(stream, reset=True)
        return
    await close_quietly(stream)


async def _push_to(host: IHost, peer: PeerID) -> None:
    with trio.move_on_after(_PUSH_TIMEOUT):
        try:
            stream = await host.new_stream(peer, [ID_PUSH])
        except Exception as exc:
            log.debug("identify push to %s: %s", peer, exc)
            return
        await _send(host, stream)


async def push_all(host: IHost) -> None:
    """Tell every connected peer what we now serve (each within 5 s)."""
    async with trio.open_nursery() as nursery:
        for peer in list(host.get_network().connections):
            nursery.start_soon(_push_to, host, peer)


def install(host: IHost) -> None:
    """Answer identify, and push, per peer; call once the host exists."""

    async def answer(stream: INetStream) -> None:
        await _send(host, stream)

    host.set_stream_handler(IDENTIFY, answer)
    # py-libp2p pushes on its own when listeners change; route that here too.
    target: Any = host

    async def push() -> None:
        await push_all(host)

    target._push_identify_to_all_peers = push
