"""Which of its addresses a node tells each peer, and which of a peer's it dials.

An address means something only where it is dialled. ``127.0.0.1`` names
the dialler's own machine and ``fe80::…`` its own link, so a node that tells
a peer on another machine its loopback address sends that peer to itself,
where something else (often that peer's own listener) answers with another
identity. A wildcard listen address (``0.0.0.0``) is worse: dialled, it
reaches the dialler's own host. So a node advertises concrete interface
addresses, and to each peer only those that peer can reach, the likeliest
first; and a dialler never dials a wildcard, nor loopback on another
machine's behalf.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Final

import psutil
from multiaddr import Multiaddr

__all__ = ["Scope", "advertised", "dialable", "expand", "for_remote", "ip_of",
           "remote_usable", "scope_of"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Scope:
    """How far an address carries, narrowest first."""

    LOOPBACK: Final = 0
    LINK: Final = 1
    NETWORK: Final = 2  # private or public: reachable beyond this host's link


def ip_of(addr: Multiaddr | str | None) -> IP | None:
    """The IP address in ``/ip4/…`` or ``/ip6/…`` (or a bare IP string); ``None``
    for anything else (``/dns/…``, say, which we cannot classify)."""
    if addr is None:
        return None
    if isinstance(addr, str) and not addr.startswith("/"):
        try:
            return ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return None
    text = str(addr)
    for proto in ("ip4", "ip6"):
        if text.startswith(f"/{proto}/"):
            try:
                return ipaddress.ip_address(text.split("/")[2].split("%", 1)[0])
            except ValueError:
                return None
    return None


def scope_of(ip: IP) -> int:
    if ip.is_loopback:
        return Scope.LOOPBACK
    if ip.is_link_local:
        return Scope.LINK
    return Scope.NETWORK


def _interface_ips(version: int) -> list[IP]:
    out: list[IP] = []
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family != family:
                continue
            try:
                ip = ipaddress.ip_address(entry.address.split("%", 1)[0])
            except ValueError:
                continue
            # A link-local IPv6 address needs its zone to be dialled, and
            # multiaddrs of it rarely carry one: leave those out.
            if not (version == 6 and ip.is_link_local):
                out.append(ip)
    return out


def expand(addrs: Iterable[Multiaddr]) -> list[Multiaddr]:
    """Listen addresses as others can dial them: a wildcard becomes every
    interface address of its family, loopback first (local tools take the
    first address), duplicates dropped."""
    out: list[Multiaddr] = []
    seen: set[str] = set()
    for addr in addrs:
        ip = ip_of(addr)
        if ip is not None and ip.is_unspecified:
            rest = "/".join(str(addr).split("/")[3:])
            ips = sorted(_interface_ips(ip.version), key=scope_of)
            candidates = [Multiaddr(f"/ip{ip.version}/{i}/{rest}") for i in ips]
        else:
            candidates = [addr]
        for candidate in candidates:
            if str(candidate) not in seen:
                seen.add(str(candidate))
                out.append(candidate)
    return out


def advertised(listening: Sequence[Multiaddr],
               announce: Sequence[Multiaddr] = ()) -> list[Multiaddr]:
    """What a node says it is reachable at: ``announce`` when the operator
    gave it (behind NAT or a port mapping only they know the way in), else
    the concrete addresses it listens on."""
    return list(announce) if announce else expand(listening)


def _shared_prefix(a: IP, b: IP) -> int:
    if a.version != b.version:
        return -1
    bits = a.max_prefixlen
    return bits - (int(a) ^ int(b)).bit_length()


def for_remote(addrs: Iterable[Multiaddr], remote: IP | str | None) -> list[Multiaddr]:
    """The addresses of ``addrs`` that a peer seen at ``remote`` can reach,
    those on its own network first.

    A peer on this host (at loopback or one of our interface addresses) gets
    them all; one on this link gets no loopback;
    any other gets neither loopback nor link-local. Addresses that are not
    IPs (``/dns/…``) pass, since we cannot tell; wildcards never do.
    """
    peer = ip_of(remote) if isinstance(remote, str) else remote
    reach = Scope.NETWORK if peer is None else scope_of(peer)
    if peer is not None and reach > Scope.LOOPBACK and peer in _interface_ips(peer.version):
        reach = Scope.LOOPBACK  # a peer on this host, dialling one of our interfaces
    kept: list[tuple[int, int, Multiaddr]] = []
    for index, addr in enumerate(addrs):
        ip = ip_of(addr)
        if ip is None:
            kept.append((-1, index, addr))
            continue
        if ip.is_unspecified or (scope_of(ip) < reach):
            continue
        closeness = _shared_prefix(ip, peer) if peer is not None else 0
        kept.append((closeness, index, addr))
    # Stable: most shared prefix bits first, then the order given.
    kept.sort(key=lambda item: (-item[0], item[1]))
    return [addr for _, _, addr in kept]


def remote_usable(addrs: Iterable[Multiaddr]) -> list[Multiaddr]:
    """The addresses another machine can use (not loopback, not link-local)."""
    return for_remote(addrs, None)


def dialable(addrs: Iterable[Multiaddr], *, local_ok: bool) -> list[Multiaddr]:
    """Addresses worth dialling: never a wildcard, and loopback only when the
    peer is known to be on this host (``local_ok``)."""
    out = []
    for addr in addrs:
        ip = ip_of(addr)
        if ip is not None and (ip.is_unspecified or (ip.is_loopback and not local_ok)):
            continue
        out.append(addr)
    return out
