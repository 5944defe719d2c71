"""Start a swarm of peer processes on 127.0.0.1 (``p2pmr run --local-peers``).

Each peer is a real ``p2pmr peer`` process with its own repo, which dials
the master and trusts exactly that master. They are stopped (SIGTERM, then
SIGKILL to their process group after a grace period) when the swarm closes,
however it closes, including peers still starting up; and they never
outlive the master's process: each holds the read end of a pipe whose only
writer is the master, and stops when it reads end-of-file, which the kernel
delivers the moment the master's process ends, even by SIGKILL.

Peers may start before their master's node is up (a
:class:`MasterAddress` not yet known): each then opens its own node and
warms its workers meanwhile, and learns whom to trust and dial from one line
its master writes on that same pipe once it knows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .errors import collapsed
from .ready import peer_command, start_peer
from .settings import DEFAULT_LISTEN

__all__ = ["LocalPeer", "MasterAddress", "local_swarm", "stop_peers"]

log = logging.getLogger(__name__)


@dataclass
class LocalPeer:
    process: trio.Process
    repo: Path
    peer_id: str = ""
    addr: str = ""


class MasterAddress:
    """Where local peers find their master: known now, or once its node is up.

    A master that starts its peers first tells them with :meth:`set`; they
    overlap their start-up with its own.
    """

    def __init__(self, addr: str | None = None, peer_id: str | None = None) -> None:
        self._known = trio.Event()
        self.addr = addr or ""
        self.peer_id = peer_id or ""
        if addr and peer_id:
            self._known.set()

    @property
    def known(self) -> bool:
        return self._known.is_set()

    def set(self, addr: str, peer_id: str) -> None:
        self.addr, self.peer_id = addr, peer_id
        self._known.set()

    async def wait(self) -> tuple[str, str]:
        await self._known.wait()
        return self.addr, self.peer_id


async def _introduce(peer: LocalPeer, master: MasterAddress) -> None:
    """Tell a peer started with ``--master-from-stdin`` whom to trust and dial."""
    addr, peer_id = await master.wait()
    line = json.dumps({"addr": addr, "peer_id": peer_id}) + "\n"
    assert peer.process.stdin is not None
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
        await peer.process.stdin.send_all(line.encode())


async def _start_peer(repo: Path, args: Sequence[str], timeout: float,
                      spawned: list[LocalPeer]) -> LocalPeer:
    process, ready = await start_peer(peer_command(repo, args), timeout=timeout)
    peer = LocalPeer(process, repo, ready.peer_id, ready.addr)
    spawned.append(peer)  # from here on, closing the swarm stops it
    return peer


async def _drain(peer: LocalPeer) -> None:
    """Keep reading the peer's stdout so it never blocks on a full pipe."""
    assert peer.process.stdout is not None
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        while await peer.process.stdout.receive_some(4096):
            pass


async def _stop(peer: LocalPeer, grace: float = 5.0) -> None:
    """Stop a peer and its worker processes, and wait until they are gone."""
    process = peer.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    if process.stdin is not None:  # and should it miss the signal, the pipe ends too
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            await process.stdin.aclose()
    if process.returncode is None:
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.move_on_after(grace), contextlib.suppress(Exception):
                await process.wait()
    # Its workers share its process group; none may outlive it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def stop_peers(peers: Sequence[LocalPeer]) -> None:
    """Stop these peers now, side by side (closing the swarm does it anyway).

    For a master about to close its node: peers stopped first do not see it
    go and start redialling it, and its connections to them close at once.
    """
    async with trio.open_nursery() as nursery:
        for peer in list(peers):
            nursery.start_soon(_stop, peer)


@contextlib.asynccontextmanager
async def local_swarm(n: int, base: Path, master_addr: str | MasterAddress,
                      master_id: str = "", *, workers: int | None = None,
                      extra_args: Sequence[str] = (), start_timeout: float = 60.0,
                      wait: bool = True, temporary: bool = False, siblings: bool = False
                      ) -> AsyncIterator[list[LocalPeer]]:
    """Run ``n`` local peers for the duration of the block.

    The master is named by its address and peer ID, or by a
    :class:`MasterAddress` that may become known only later: the peers then
    start at once and are told when it is.

    With ``wait`` the block starts once every peer is ready; without, at
    once, while the peers start in the background (the master finds them as
    they connect), so their start-up overlaps whatever the caller does next.
    With ``temporary`` each peer deletes its repo (under ``base``) as it
    stops, and ``base`` too once it is empty: nothing is left behind even
    when the caller is killed before it can clean up. With ``siblings`` each
    peer also reads the others' stores in place (``--read-store``), so a
    reducer reads the map outputs of a peer on the same disk where they lie
    instead of having them sent over the network.
    """
    if workers is None:
        from .peer import usable_cpus

        workers = max(1, usable_cpus() // max(1, n))
    master = master_addr if isinstance(master_addr, MasterAddress) else \
        MasterAddress(master_addr, master_id)
    args = ["--listen", DEFAULT_LISTEN[0], "--workers", str(workers), "--exit-with-parent"]
    args += ["--bootstrap", master.addr, "--trust", master.peer_id] if master.known else \
        ["--master-from-stdin"]
    args += extra_args
    later = not master.known
    if temporary:
        args.append("--remove-repo")

    def _siblings_of(i: int) -> list[str]:
        return [arg for j in range(n) if j != i and siblings
                for arg in ("--read-store", str(base / f"peer-{j}"))]

    if siblings:  # each store exists before any peer looks for it
        for i in range(n):
            (base / f"peer-{i}" / "blocks").mkdir(parents=True, exist_ok=True)
    peers: list[LocalPeer] = []    # started: ready for work
    spawned: list[LocalPeer] = []  # every process, started or still starting
    with collapsed():  # errors in the block leave as themselves
        async with trio.open_nursery() as nursery:
            try:
                async def start(i: int) -> None:
                    peer = await _start_peer(base / f"peer-{i}", [*args, *_siblings_of(i)],
                                             start_timeout, spawned)
                    peers.append(peer)
                    nursery.start_soon(_drain, peer)
                    if later:
                        nursery.start_soon(_introduce, peer, master)

                if wait:
                    async with trio.open_nursery() as starters:
                        for i in range(n):
                            starters.start_soon(start, i)
                    log.info("started %d local peer(s)", n)
                else:
                    for i in range(n):
                        nursery.start_soon(start, i)
                yield peers
            finally:
                nursery.cancel_scope.cancel()  # no more starts
                with trio.CancelScope(shield=True):
                    async with trio.open_nursery() as stoppers:
                        for peer in spawned:
                            stoppers.start_soon(_stop, peer)
