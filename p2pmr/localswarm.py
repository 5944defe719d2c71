"""Start a swarm of peer processes on 127.0.0.1 (``p2pmr run --local-peers``).

Each peer is a real ``p2pmr peer`` process with its own repo, which dials
the master and trusts exactly that master. They are stopped (SIGTERM, then
SIGKILL to their process group after a grace period) when the swarm closes,
however it closes, including peers still starting up; and they never
outlive the master's process: each holds the read end of a pipe whose only
writer is the master, and stops when it reads end-of-file, which the kernel
delivers the moment the master's process ends, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .errors import collapsed
from .node import DEFAULT_LISTEN
from .ready import peer_command, start_peer

__all__ = ["LocalPeer", "local_swarm"]

log = logging.getLogger(__name__)


@dataclass
class LocalPeer:
    process: trio.Process
    repo: Path
    peer_id: str = ""
    addr: str = ""


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


@contextlib.asynccontextmanager
async def local_swarm(n: int, base: Path, master_addr: str, master_id: str, *,
                      workers: int | None = None, extra_args: Sequence[str] = (),
                      start_timeout: float = 60.0, wait: bool = True, temporary: bool = False
                      ) -> AsyncIterator[list[LocalPeer]]:
    """Run ``n`` local peers for the duration of the block.

    With ``wait`` the block starts once every peer is ready; without, at
    once, while the peers start in the background (the master finds them as
    they connect), so their start-up overlaps whatever the caller does next.
    With ``temporary`` each peer deletes its repo (under ``base``) as it
    stops, and ``base`` too once it is empty: nothing is left behind even
    when the caller is killed before it can clean up.
    """
    if workers is None:
        from .peer import usable_cpus

        workers = max(1, usable_cpus() // max(1, n))
    args = ["--listen", DEFAULT_LISTEN[0], "--bootstrap", master_addr, "--trust", master_id,
            "--workers", str(workers), "--exit-with-parent", *extra_args]
    if temporary:
        args.append("--remove-repo")
    peers: list[LocalPeer] = []    # started: ready for work
    spawned: list[LocalPeer] = []  # every process, started or still starting
    with collapsed():  # errors in the block leave as themselves
        async with trio.open_nursery() as nursery:
            try:
                async def start(i: int) -> None:
                    peer = await _start_peer(base / f"peer-{i}", args, start_timeout, spawned)
                    peers.append(peer)
                    nursery.start_soon(_drain, peer)

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
