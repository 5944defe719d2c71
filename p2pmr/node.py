"""A p2pmr node: a libp2p host bundled with a block store.

Open one with :func:`open_node`. The node owns its background tasks (the
host, Bitswap, keeping bootstrap peers connected), and closing the context
stops them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
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
from libp2p.security.noise.exceptions import PeerIDMismatchesPubkey
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr.protocols import P_P2P

from . import identify
from .addresses import advertised, dialable, ip_of, remote_usable
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
# Redialling a lost peer backs off to this: a refused dial costs little,
# and a restarted master should see its peers back within seconds.
_REDIAL_MAX_DELAY: Final = 3.0


class _WrongIdentity(NodeError):
    """Another peer answered where ``peer`` was expected."""

    def __init__(self, peer: PeerID, addrs: list[str]) -> None:
        super().__init__(f"another peer answers at {', '.join(addrs)}, not {peer}")
        self.addrs = addrs


def _is_other_identity(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PeerIDMismatchesPubkey) or "Peer ID mismatch" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    """The innermost message of py-libp2p's wrapped dial errors."""
    while exc.__cause__ is not None and str(exc.__cause__):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


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


def _build_host(key_pair: KeyPair, psk: str | None,
                announce: Sequence[multiaddr.Multiaddr] = ()) -> IHost:
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
    # Advertise concrete addresses (no wildcards), not what peers observed of
    # us (behind NAT that is a port nobody listens on); identify then tells
    # each peer only those it can reach (p2pmr.addresses).
    host = new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
                    muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                    connection_config=config, psk=psk, enable_mDNS=False, enable_upnp=False,
                    addrs_factory=lambda listening: advertised(listening, announce),
                    disable_identify_address_discovery=True)
    identify.install(host)
    return host


async def _resolve(addrs: Sequence[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """``/dns``, ``/dns4`` and ``/dns6`` addresses as the IP addresses they
    name now (a restarted container may come back at another), each lookup
    within 5 s; others as they are. py-libp2p dials only IP addresses."""
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        parts = str(addr).split("/")
        if len(parts) < 3 or parts[1] not in ("dns", "dns4", "dns6"):
            out.append(addr)
            continue
        family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(parts[1], 0)
        found: list[Any] = []
        with trio.move_on_after(5):
            with contextlib.suppress(OSError, UnicodeError):  # no such name, or not a name
                found = await trio.socket.getaddrinfo(parts[2], None, family=family,
                                                      type=socket.SOCK_STREAM)
        rest = "/".join(parts[3:])
        for fam, *_, sockaddr in found:
            proto = "ip6" if fam == socket.AF_INET6 else "ip4"
            resolved = multiaddr.Multiaddr(f"/{proto}/{sockaddr[0]}/{rest}")
            if resolved not in out:
                out.append(resolved)
        if not found:
            log.debug("%s: no address for %s", addr, parts[2])
    return out


async def _race_dials(network: Any, peer: PeerID, addrs: Sequence[multiaddr.Multiaddr],
                      timeout: float, failures: dict[str, BaseException],
                      ) -> multiaddr.Multiaddr | None:
    """Dial ``addrs`` in turn, starting the next every 250 ms or as soon as
    one fails, until one connects (the rest are cancelled); record why the
    others failed."""
    won: list[multiaddr.Multiaddr] = []
    settled = trio.Event()

    async def attempt(addr: multiaddr.Multiaddr, scope: trio.CancelScope) -> None:
        try:
            conn = await network.dial_addr(addr, peer)
            started = getattr(conn, "event_started", None)
            if started is not None:
                await started.wait()
        except Exception as exc:
            failures[str(addr)] = exc
        else:
            won.append(addr)
            scope.cancel()
        settled.set()

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(attempt, addr, nursery.cancel_scope)
                with trio.move_on_after(0.25):
                    await settled.wait()
                settled = trio.Event()
    return won[0] if won else None


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

    @property
    def remote_multiaddrs(self) -> list[str]:
        """The addresses that other machines can use: not loopback, not
        link-local (empty for a node listening on loopback alone)."""
        usable = {str(a) for a in remote_usable(self.host.get_addrs())}
        return [a for a in self.multiaddrs if a in usable]

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a background task for the node's lifetime."""
        self._nursery.start_soon(fn, *args)

    async def connect(self, addr: str | multiaddr.Multiaddr, *,
                      timeout: float = _CONNECT_TIMEOUT) -> PeerID:
        """Dial a peer by full multiaddr; return its authenticated peer ID."""
        peer_id, ma = parse_peer_addr(addr)
        await self._dial(peer_id, [ma.decapsulate_code(P_P2P)], timeout=timeout)
        return peer_id

    async def _dial(self, peer: PeerID, addrs: Sequence[multiaddr.Multiaddr], *,
                    timeout: float) -> multiaddr.Multiaddr:
        """Connect to ``peer`` through the first of ``addrs`` that answers as
        it, trying the next every 250 ms (or at once when one fails), as
        happy eyeballs does; return the address that worked.

        Only the addresses given are dialled, never what the peerstore holds:
        a peer restarted on another machine may have advertised, last time,
        addresses that here reach someone else or nobody.
        """
        network: Any = self.host.get_network()
        # py-libp2p refuses for 60 s to redial a peer whose dial failed once;
        # a restarted master would be unreachable that long. Our callers
        # (keep_connected) pace their own retries, so clear that block.
        unblock = getattr(network, "unblock_peer", None)
        if unblock is not None:
            unblock(peer)
        tried = ", ".join(str(a) for a in addrs)
        resolved = await _resolve(addrs)
        if not resolved:
            raise NodeError(f"could not connect to {peer}: no address found for {tried}")
        failures: dict[str, BaseException] = {}
        won = resolved[0] if self.is_connected(peer) else await _race_dials(
            network, peer, resolved, timeout, failures)
        if won is not None:
            self.host.get_peerstore().add_addrs(peer, [won], 120)
            if self.kubo is not None:
                # Let the daemon exchange blocks with this peer directly.
                await self.kubo.swarm_connect(f"{won}/p2p/{peer}")
            return won
        impostors = [a for a, e in failures.items() if _is_other_identity(e)]
        if impostors:
            raise _WrongIdentity(peer, impostors)
        if not failures:
            raise NodeError(f"could not connect to {peer} at {tried} within {timeout:g}s")
        reasons = "; ".join(f"{a}: {_reason(e)}" for a, e in failures.items())
        raise NodeError(f"could not connect to {peer} at {tried}: {reasons}")

    def connected_peers(self) -> list[PeerID]:
        return list(self.host.get_network().connections.keys())

    def is_connected(self, peer: PeerID) -> bool:
        return bool(self.host.get_network().connections.get(peer))

    async def keep_connected(self, addr: str) -> None:
        """Stay connected to ``addr`` for the node's lifetime, redialling with backoff.

        A lost peer is redialled through ``addr`` and through every address it
        told us while connected (a master restarted on another port or
        interface is still found), except loopback when ``addr`` is not, and
        except any address where another identity answered.
        """
        peer_id, given = parse_peer_addr(addr)
        given = given.decapsulate_code(P_P2P)
        local_ok = (ip := ip_of(given)) is not None and ip.is_loopback
        learned: list[multiaddr.Multiaddr] = []
        wrong: set[str] = set()
        warned = False
        delay = 0.5
        while True:
            # Also once lost: the peerstore keeps what it said for a while.
            learned = self._learned(peer_id, learned, local_ok=local_ok)
            if self.is_connected(peer_id):
                await trio.sleep(0.5)
                continue
            candidates = [given] + [a for a in learned
                                    if str(a) != str(given) and str(a) not in wrong]
            try:
                used = await self._dial(peer_id, candidates, timeout=_CONNECT_TIMEOUT)
            except _WrongIdentity as exc:
                for bad in exc.addrs:
                    if bad == str(given):
                        if not warned:
                            log.warning("%s answers as another peer, not %s; is the "
                                        "address right?", bad, peer_id)
                        warned = True
                    elif bad not in wrong:
                        wrong.add(bad)
                        log.info("dropping %s for %s: another peer answers there",
                                 bad, peer_id)
            except P2PMRError as exc:
                log.debug("bootstrap %s: %s; retrying in %.1fs", addr, exc, delay)
            else:
                log.info("connected to %s/p2p/%s", used, peer_id)
                delay = 0.5
                continue
            await trio.sleep(delay)
            delay = min(delay * 2, _REDIAL_MAX_DELAY)

    def _learned(self, peer: PeerID, before: list[multiaddr.Multiaddr], *,
                 local_ok: bool) -> list[multiaddr.Multiaddr]:
        """Every address ``peer`` has told us of, the latest first (at most 8):
        the peerstore forgets on disconnect, and a reconnection refills it
        with the dialled address alone until identify runs."""
        try:
            now = list(self.host.get_peerstore().addrs(peer))
        except Exception:
            now = []
        merged: dict[str, multiaddr.Multiaddr] = {}
        for addr in dialable([a.decapsulate_code(P_P2P) for a in now], local_ok=local_ok):
            merged.setdefault(str(addr), addr)
        for addr in before:
            merged.setdefault(str(addr), addr)
        return list(merged.values())[:8]

    # -- conveniences over the block store -------------------------------------

    async def add_bytes(self, data: bytes, options: ImportOptions | None = None) -> CID:
        return await add_bytes(self.blocks, data, options)

    async def add_path(self, path: str | os.PathLike[str],
                       options: ImportOptions | None = None) -> CID:
        return await add_path(self.blocks, path, options)


@contextlib.asynccontextmanager
async def open_node(repo: str | os.PathLike[str] | None = None, *,
                    listen: Sequence[str] = DEFAULT_LISTEN,
                    announce: Sequence[str] = (),
                    bootstrap: Sequence[str] = (),
                    ipfs_api: str | None = None,
                    psk: str | None = None,
                    bootstrap_timeout: float = _CONNECT_TIMEOUT) -> AsyncIterator[Node]:
    """Start a node; stop it when the block exits.

    ``repo`` holds the identity, the block store and job journals (default
    :func:`default_repo`); while the node runs, its ``node.json`` says so
    (:func:`p2pmr.repo.node_file`). With ``ipfs_api`` (a multiaddr such as
    ``/ip4/127.0.0.1/tcp/5001``) blocks live in that Kubo daemon instead of
    the local store. ``announce`` replaces the addresses the node
    advertises (behind NAT or a port mapping); by default it advertises the
    addresses it listens on, a wildcard expanded to every interface, and
    tells each peer only those that peer can reach. Bootstrap peers are
    dialled before this returns (each within ``bootstrap_timeout``; failures
    are logged, not fatal) and then kept connected.
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
        try:
            announced = [multiaddr.Multiaddr(a) for a in announce]
        except Exception as exc:
            raise NodeError(f"not a multiaddr in --announce: {exc}") from exc
        host = _build_host(key_pair, psk, announced)
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
                # Close listeners, then connections, explicitly: py-libp2p
                # leaves both open when a node stops inside a running process,
                # and its stopped swarm goes on completing handshakes, so a
                # peer redialling would think it reconnected.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    for listener in list(network.listeners.values()):
                        with contextlib.suppress(Exception):
                            await listener.close()
                    for peer in node.connected_peers():
                        with contextlib.suppress(Exception):
                            await host.disconnect(peer)

