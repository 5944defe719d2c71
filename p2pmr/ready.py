"""How a peer process says it is ready, and how whoever started it waits for that.

``p2pmr peer`` prints its peer ID and addresses for people, then one line
for programs::

    ready {"peer_id": "12D3Koo…", "addrs": ["/ip4/127.0.0.1/tcp/4005/p2p/12D3Koo…"], "workers": 2}

:func:`start_peer` (async, for ``--local-peers``) and
:func:`start_peer_blocking` (for tests and benchmarks that drive processes
from threads) start a peer process and wait for that line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import trio

from .errors import NodeError

if TYPE_CHECKING:
    from .node import Node
    from .peer import PeerService

__all__ = ["READY", "Ready", "announce_ready", "parse_ready", "peer_command", "ready_line",
           "start_peer", "start_peer_blocking"]

READY: Final = "ready "


@dataclass(frozen=True)
class Ready:
    """What a ready peer process reported."""

    peer_id: str
    addrs: tuple[str, ...]
    workers: int

    @property
    def addr(self) -> str:
        return self.addrs[0]


def announce_ready(node: Node, service: PeerService) -> None:
    """Print the peer's addresses, and then the ready line, on stdout."""
    print(f"Peer ID: {node.peer_id}")
    print("Listening on:")
    for addr in node.multiaddrs:
        print(f"  {addr}")
    remote = node.remote_multiaddrs
    if remote:
        print("Other machines can reach this peer at:")
        for addr in remote:
            print(f"  {addr}")
    else:
        print("Only this machine can reach this peer; to accept peers from others, "
              "listen on /ip4/0.0.0.0/tcp/PORT (and --announce the address they "
              "must dial, behind NAT or a port mapping).")
    print(f"Serving {service.config.workers} worker(s) for {service.trust.describe()}.")
    print(ready_line(str(node.peer_id), node.multiaddrs, service.config.workers), flush=True)


def ready_line(peer_id: str, addrs: Sequence[str], workers: int) -> str:
    """The ready line, for any process that serves libp2p and is started by
    :func:`start_peer` (a benchmark's stream server, say)."""
    return READY + json.dumps({"peer_id": peer_id, "addrs": list(addrs), "workers": workers})


def parse_ready(line: str) -> Ready | None:
    """The ready line's contents, or None for any other line."""
    if not line.startswith(READY):
        return None
    try:
        doc = json.loads(line[len(READY):])
        return Ready(str(doc["peer_id"]), tuple(str(a) for a in doc["addrs"]),
                     int(doc["workers"]))
    except (ValueError, KeyError, TypeError):
        return None


def peer_command(repo: Path, args: Sequence[str] = (), *, script: Path | None = None
                 ) -> list[str]:
    """The command that runs a peer on ``repo``: ``p2pmr peer``, or a script
    that takes the same options (a chaos peer, say)."""
    head = [str(script)] if script is not None else ["-m", "p2pmr", "peer"]
    return [sys.executable, *head, "--repo", str(repo), *args]


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}


async def start_peer(command: Sequence[str], *, timeout: float = 60.0,
                     env: dict[str, str] | None = None) -> tuple[trio.Process, Ready]:
    """Start a peer process in a session of its own and wait until it is ready.

    Its stdin is a pipe the caller keeps: a peer started with
    ``--exit-with-parent`` stops when that pipe closes. Its stderr is the
    caller's. Raises :class:`~p2pmr.errors.NodeError` if it exits or stays
    silent for ``timeout`` seconds; the process is then stopped.
    """
    process = await trio.lowlevel.open_process(
        list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        env=_environment(env), start_new_session=True)
    assert process.stdout is not None
    buffer = b""
    ready: Ready | None = None
    try:
        with trio.move_on_after(timeout):
            while ready is None:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    break
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                for line in lines:
                    ready = ready or parse_ready(line.decode(errors="replace"))
    except BaseException:
        with trio.CancelScope(shield=True):
            await _kill(process)
        raise
    if ready is None:
        with trio.CancelScope(shield=True):
            await _kill(process)
        raise NodeError(f"the peer process {' '.join(command[-6:])} did not become ready "
                        f"within {timeout:g}s (exit status {process.returncode})")
    return process, ready


async def _kill(process: trio.Process) -> None:
    import signal

    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        with trio.move_on_after(5):
            await process.wait()


def start_peer_blocking(command: Sequence[str], *, timeout: float = 60.0,
                        env: dict[str, str] | None = None, stderr: int | IO[str] | None = None,
                        cwd: Path | None = None,
                        preexec: Callable[[], object] | None = None,
                        started: Callable[[subprocess.Popen[str]], object] | None = None
                        ) -> tuple[subprocess.Popen[str], Ready]:
    """:func:`start_peer`, for callers without an event loop (tests, benchmarks).

    ``started`` is called with the process as soon as it exists (to start
    draining its stderr, say).
    """
    process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=stderr, text=True,
                               env=_environment(env), start_new_session=True, cwd=cwd,
                               preexec_fn=preexec)
    if started is not None:
        started(process)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        ready = parse_ready(line.strip())
        if ready is not None:
            return process, ready
    process.kill()
    process.wait(10)
    raise NodeError(f"the peer process {' '.join(command[-6:])} did not become ready within "
                    f"{timeout:g}s (exit status {process.returncode})")
