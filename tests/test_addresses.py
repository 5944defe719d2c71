"""Which addresses a node tells whom, and which it dials (p2pmr.addresses),
with real libp2p hosts on 127.0.0.1 for the dialling side. The other-host
side runs in network namespaces, in test_multihost.py."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from multiaddr import Multiaddr

from p2pmr.addresses import dialable, expand, for_remote, remote_usable
from p2pmr.errors import NodeError
from p2pmr.node import open_node

LOOP, LAN, LINK = "/ip4/127.0.0.1/tcp/1", "/ip4/10.1.2.3/tcp/1", "/ip4/169.254.9.9/tcp/1"
OTHER_LAN = "/ip4/192.168.7.7/tcp/1"


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (a peerstore has no event to wait on)
            await trio.sleep(0.05)


def strs(addrs: list[Multiaddr]) -> list[str]:
    return [str(a) for a in addrs]


def test_each_peer_is_told_only_what_it_can_reach() -> None:
    ours = [Multiaddr(a) for a in (LOOP, OTHER_LAN, LINK, LAN, "/dns/master/tcp/1")]
    # On this host: everything; on our link: no loopback; beyond it: neither.
    assert strs(for_remote(ours, "127.0.0.1"))[:1] == [LOOP]
    assert set(strs(for_remote(ours, "127.0.0.1"))) == {str(a) for a in ours}
    assert LOOP not in strs(for_remote(ours, "169.254.1.1"))
    assert LINK in strs(for_remote(ours, "169.254.1.1"))
    far = strs(for_remote(ours, "10.1.9.9"))
    assert LOOP not in far and LINK not in far
    assert far[0] == LAN  # the address on the peer's own network first
    assert strs(remote_usable(ours)) == [OTHER_LAN, LAN, "/dns/master/tcp/1"]


def test_wildcards_are_expanded_and_never_dialled() -> None:
    expanded = strs(expand([Multiaddr("/ip4/0.0.0.0/tcp/7")]))
    assert expanded[0] == "/ip4/127.0.0.1/tcp/7"  # loopback first: local tools take it
    assert "/ip4/0.0.0.0/tcp/7" not in expanded
    mixed = [Multiaddr(a) for a in ("/ip4/0.0.0.0/tcp/7", LOOP, LAN)]
    assert strs(dialable(mixed, local_ok=False)) == [LAN]
    assert strs(dialable(mixed, local_ok=True)) == [LOOP, LAN]
    assert strs(for_remote(mixed, "127.0.0.1")) == [LOOP, LAN]


async def test_dialling_an_address_where_another_peer_answers_names_it(
        tmp_path: Path) -> None:
    async with open_node(tmp_path / "a") as a, open_node(tmp_path / "b") as b, \
            open_node(tmp_path / "c") as c:
        where = a.multiaddrs[0].rsplit("/p2p/", 1)[0]
        wanted = re.escape(f"another peer answers at {where}, not {b.peer_id}")
        with pytest.raises(NodeError, match=wanted):
            await c.connect(f"{where}/p2p/{b.peer_id}", timeout=10)
        assert not c.is_connected(b.peer_id)


async def test_a_lost_peer_is_redialled_without_addresses_another_peer_took(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``keep_connected`` redials through the given address and the ones the
    peer advertised; one where another identity answers is dropped."""
    caplog.set_level(logging.INFO, logger="p2pmr.node")
    listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.2/tcp/0"]
    async with open_node(tmp_path / "b") as b:
        async with open_node(tmp_path / "a", listen=listen) as a:
            first, second = (x.rsplit("/p2p/", 1)[0] for x in a.multiaddrs)
            target = a.peer_id
            b.spawn(b.keep_connected, f"{first}/p2p/{target}")
            # identify tells b both addresses
            await until(lambda: b.is_connected(target)
                        and len(b.host.get_peerstore().addrs(target)) == 2)
            await trio.sleep(0.7)  # keep_connected reads them every 0.5 s
        # Someone else now listens at a's second address; a comes back at its first.
        async with open_node(tmp_path / "c", listen=[second]) as c:
            await trio.sleep(1.0)
            async with open_node(tmp_path / "a", listen=[first]):
                await until(lambda: b.is_connected(target), timeout=15)
                assert not b.is_connected(c.peer_id)
    messages = [r.getMessage() for r in caplog.records]
    assert f"dropping {second} for {target}: another peer answers there" in messages
    assert f"connected to {first}/p2p/{target}" in messages


async def test_a_dns_address_is_resolved_when_dialled(tmp_path: Path) -> None:
    """Compose files and clusters name the master by host name; py-libp2p
    dials IP addresses only."""
    async with open_node(tmp_path / "a") as a, open_node(tmp_path / "b") as b:
        port = a.multiaddrs[0].split("/")[4]
        assert await b.connect(f"/dns4/localhost/tcp/{port}/p2p/{a.peer_id}") == a.peer_id
        assert b.is_connected(a.peer_id)
        wanted = re.escape("no address found for /dns4/no-such-host.invalid")
        with pytest.raises(NodeError, match=wanted):
            await b.connect(f"/dns4/no-such-host.invalid/tcp/1/p2p/{a.peer_id}")
