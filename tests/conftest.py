"""Shared fixtures: a master node in the test process, real peer processes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from p2pmr.localswarm import LocalPeer, local_swarm
from p2pmr.node import Node, open_node

from .swarm import Swarm

# Property tests here check correctness, not speed: a loaded CI machine must
# not turn a slow example into a failure. A failure prints the blob that
# replays it (`@reproduce_failure`), since CI logs are all we get back.
settings.register_profile("p2pmr", settings.default, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("p2pmr")


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name failures once more at the very end: CI logs are often read from
    the tail, and pytest's own summary sits above the final stats line."""
    failed = [r.nodeid for key in ("failed", "error") for r in terminalreporter.stats.get(key, [])]
    if failed:
        terminalreporter.config.add_cleanup(
            lambda: print("\nfailed: " + " ".join(failed), flush=True))
