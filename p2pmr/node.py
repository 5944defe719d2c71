"""A p2pmr node: a libp2p host bundled with a block store.

Open one with :func:`open_node`. The node owns its background tasks (the
host, Bitswap, keeping bootstrap peers connected), and closing the context
stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import load_identity, save_identity
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from .errors import NodeError, P2PMRError, collapsed
from .network import Libp2pNetwork, Network
from .repo import node_file, repo_lock
from .settings import DEFAULT_LISTEN, default_repo
from .storage.base import BlockStore
from .storage.bitswap import Bitswap
from .storage.cid import CID
from .storage.embedded import EmbeddedStore
from .storage.flatfs import FlatFSStore
from .storage.unixfs import ImportOptions, add_bytes, add_path

if TYPE_CHECKING:
    from .storage.kubo import KuboStore

__all__ = ["DEFAULT_LISTEN", "Node", "default_repo", "open_node", "parse_peer_addr"]

log = logging.getLogger(__name__)

_IDENTITY_FILE: Final = "identity.key"
_CONNECT_TIMEOUT: Final = 10.0


def parse_peer_addr(addr: str | multiaddr.Multiaddr) -> tuple[PeerID, multiaddr.Multiaddr]:
    """Split ``/ip4/…/tcp/…/p2p/ID`` into the peer ID and the full address."""
    try:
        ma = addr if isinstance(addr, multiaddr.Multiaddr) else multiaddr.Multiaddr(addr)
        info = info_from_p2p_addr(ma)
    except Exception as exc:
        raise NodeError(f"not a peer multiaddr (need …/p2p/PEER_ID): {addr}") from exc
    return info.peer_id, ma


def peer_id_of(key_pair: KeyPair) -> str:
    return str(PeerID.from_pubkey(key_pair.public_key))


def load_or_create_identity(repo: Path) -> KeyPair:
    """The repo's Ed25519 key pair, created and saved (mode 0600) on first use."""
    path = repo / _IDENTITY_FILE
    if path.exists():
        return load_identity(path)
    key_pair = create_new_key_pair()
    save_identity(key_pair, path)
    log.info("created a new identity in %s", path)
    return key_pair


def _build_host(key_pair: KeyPair, psk: str | None) -> IHost:
    # Noise only. py-libp2p's defaults also offer plaintext, whose peer IDs
    # are unauthenticated claims; trust decisions rest on Noise's proof.
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    # max_connections_per_peer=1 ends the dial as soon as one address works,
    # instead of waiting out the 250 ms happy-eyeballs head start; a minimum
    # connection count of 0 keeps the auto-connector from re-dialling every
    # peer it ever saw (we keep bootstrap peers connected ourselves).
    config = ConnectionConfig(max_connections_per_peer=1, min_connections=0, low_watermark=0)
    # yamux only: py-libp2p also offers mplex, which has no flow control, so
    # one peer that stops reading can back up a whole connection.
    return new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
                    muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                    connection_config=config, psk=psk, enable_mDNS=False, enable_upnp=False)


class Node:
    """A running node: a network, a block store and a repo.

    Create it with :func:`open_node` (libp2p; :mod:`p2pmr.testing` makes
    nodes in memory). The master and the peer use only :attr:`network`,
    :attr:`blocks` and :attr:`repo`; the libp2p host, the local store and
    the Bitswap engine are here for the tools around them.
    """

    def __init__(self, network: Network, repo: Path, blocks: BlockStore,
                 nursery: trio.Nursery, *, host: IHost | None = None,
                 local: FlatFSStore | None = None, bitswap: Bitswap | None = None,
                 kubo: KuboStore | None = None) -> None:
        self.network = network
        self.repo = repo
        self.blocks = blocks
        self._nursery = nursery
        self._host = host
        self.local = local
        self.bitswap = bitswap
        self.kubo = kubo

    @property
    def host(self) -> IHost:
        if self._host is None:
            raise NodeError("this node has no libp2p host (it is an in-memory node)")
        return self._host

    @property
    def peer_id(self) -> PeerID:
        return self.network.local_peer

    @property
    def multiaddrs(self) -> list[str]:
        """Full dialable addresses, ``/ip4/…/tcp/…/p2p/PEER_ID``."""
        out = []
        for addr in self.host.get_addrs():
            text = str(addr)
            if "/p2p/" not in text:
                text += f"/p2p/{self.peer_id}"
            out.append(text)
        return out

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a background task for the node's lifetime."""
        self._nursery.start_soon(fn, *args)

    async def connect(self, addr: str | multiaddr.Multiaddr, *,
                      timeout: float = _CONNECT_TIMEOUT) -> PeerID:
        """Dial a peer by full multiaddr; return its authenticated peer ID."""
        peer_id, ma = parse_peer_addr(addr)
        info = info_from_p2p_addr(ma)
        # py-libp2p refuses for 60 s to redial a peer whose dial failed once;
        # a restarted master would be unreachable that long. Our callers
        # (keep_connected) pace their own retries, so clear that block.
        network: Any = self.host.get_network()
        unblock = getattr(network, "unblock_peer", None)
        if unblock is not None:
            unblock(peer_id)
        if not self.is_connected(peer_id):
            # Dial the address given, not what the peer said of itself last
            # time: a restarted peer on another machine may have advertised
            # loopback or wildcard addresses that here reach someone else
            # (or nobody), and py-libp2p tries the peerstore's addresses.
            self.host.get_peerstore().clear_addrs(peer_id)
        try:
            with trio.fail_after(timeout):
                await self.host.connect(info)
        except trio.TooSlowError:
            raise NodeError(f"could not connect to {addr} within {timeout:g}s") from None
        except P2PMRError:
            raise
        except Exception as exc:
            raise NodeError(f"could not connect to {addr}: {exc}") from exc
        if self.kubo is not None:
            # Let the daemon exchange blocks with this peer directly.
            await self.kubo.swarm_connect(str(ma))
        return peer_id

    def connected_peers(self) -> list[PeerID]:
        return list(self.host.get_network().connections.keys())

    def is_connected(self, peer: PeerID) -> bool:
        return bool(self.host.get_network().connections.get(peer))

    async def keep_connected(self, addr: str) -> None:
        """Stay connected to ``addr`` for the node's lifetime, redialling with backoff."""
        peer_id, _ = parse_peer_addr(addr)
        delay = 0.5
        while True:
            if not self.is_connected(peer_id):
                try:
                    await self.connect(addr)
                    log.info("connected to %s", addr)
                    delay = 0.5
                except P2PMRError as exc:
                    log.debug("bootstrap %s: %s; retrying in %.1fs", addr, exc, delay)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
            await trio.sleep(0.5)

    # -- conveniences over the block store -------------------------------------

    async def add_bytes(self, data: bytes, options: ImportOptions | None = None) -> CID:
        return await add_bytes(self.blocks, data, options)

    async def add_path(self, path: str | os.PathLike[str],
                       options: ImportOptions | None = None) -> CID:
        return await add_path(self.blocks, path, options)


@contextlib.asynccontextmanager
async def open_node(repo: str | os.PathLike[str] | None = None, *,
                    listen: Sequence[str] = DEFAULT_LISTEN,
                    bootstrap: Sequence[str] = (),
                    ipfs_api: str | None = None,
                    psk: str | None = None,
                    bootstrap_timeout: float = _CONNECT_TIMEOUT) -> AsyncIterator[Node]:
    """Start a node; stop it when the block exits.

    ``repo`` holds the identity, the block store and job journals (default
    :func:`default_repo`); while the node runs, its ``node.json`` says so
    (:func:`p2pmr.repo.node_file`). With ``ipfs_api`` (a multiaddr such as
    ``/ip4/127.0.0.1/tcp/5001``) blocks live in that Kubo daemon instead of
    the local store. Bootstrap peers are dialled before this returns (each
    within ``bootstrap_timeout``; failures are logged, not fatal) and then
    kept connected.
    """
    repo_path = Path(repo) if repo is not None else default_repo()
    if psk is not None:
        psk = psk.strip().lower()
        if len(psk) != 64 or any(c not in "0123456789abcdef" for c in psk):
            raise NodeError("a pre-shared key is 32 bytes written as 64 hex digits "
                             "(make one with: python -c 'import secrets; "
                             "print(secrets.token_hex(32))')")
    repo_path.mkdir(parents=True, exist_ok=True)
    with repo_lock(repo_path), collapsed():  # errors leave as themselves
        key_pair = load_or_create_identity(repo_path)
        host = _build_host(key_pair, psk)
        listen_addrs = [multiaddr.Multiaddr(a) for a in listen]
        async with host.run(listen_addrs=listen_addrs), trio.open_nursery() as nursery:
            # See _build_host: we keep the peers we need connected ourselves.
            network: Any = host.get_network()
            await network.auto_connector.stop()
            local: FlatFSStore | None = None
            bitswap: Bitswap | None = None
            kubo = None
            if ipfs_api is None:
                local = FlatFSStore(repo_path)
                bitswap = Bitswap(host, local)
                await nursery.start(bitswap.run)
                blocks: BlockStore = EmbeddedStore(local, bitswap)
            else:
                from .storage.kubo import KuboStore

                kubo = await KuboStore.connect(ipfs_api)
                blocks = kubo
            node = Node(Libp2pNetwork(host, kubo), repo_path, blocks, nursery, host=host,
                        local=local, bitswap=bitswap, kubo=kubo)
            log.info("node %s listening on %s", node.peer_id, ", ".join(node.multiaddrs))
            for addr in bootstrap:
                with contextlib.suppress(P2PMRError):
                    await node.connect(addr, timeout=bootstrap_timeout)
                nursery.start_soon(node.keep_connected, addr)
            try:
                with node_file(repo_path, str(node.peer_id), node.multiaddrs):
                    yield node
            finally:
                nursery.cancel_scope.cancel()
                # Close connections explicitly so peers see the end now;
                # py-libp2p otherwise leaves the sockets to the garbage
                # collector when a node stops inside a running process.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    for peer in node.connected_peers():
                        with contextlib.suppress(Exception):
                            await host.disconnect(peer)

