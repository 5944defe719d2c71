"""Shared fixtures: a master node in the test process, real peer processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from p2pmr.localswarm import LocalPeer, local_swarm
from p2pmr.node import Node, open_node

from .swarm import Swarm


@pytest.fixture
async def master(tmp_path: Path) -> AsyncIterator[Node]:
    async with open_node(tmp_path / "master") as node:
        yield node


@contextlib.asynccontextmanager
async def peers(node: Node, base: Path, n: int, *, workers: int = 1,
                extra: tuple[str, ...] = ()) -> AsyncIterator[list[LocalPeer]]:
    """``n`` real ``p2pmr peer`` processes that trust ``node`` and dial it."""
    async with local_swarm(n, base, node.multiaddrs[0], str(node.peer_id), workers=workers,
                           extra_args=extra) as swarm:
        yield swarm


@pytest.fixture
def swarm(master: Node, tmp_path: Path) -> Iterator[Swarm]:
    """Peer processes around the master, to kill and start at will."""
    s = Swarm(master, tmp_path / "peers")
    yield s
    s.close()
