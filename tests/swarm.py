"""Shared pieces of the fault-tolerance tests: a swarm of peer processes,
test jobs configured through the environment, and the reference outputs."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID

from .helpers import PeerProcess

WORD = re.compile(r"[^\W\d_]+")
JOBS = Path(__file__).parent / "jobs"


def load_with_env(name: str, **env: str) -> object:
    """Load a test job with settings it reads from the environment at import."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_job_file(JOBS / name)
    finally:
        for key, value in old.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def expected_records(lines: list[bytes], path: str) -> list[str]:
    """What the records job outputs for a file of these lines, joined by "\n"
    (the last one unterminated): "(path, offset)\tline", sorted."""
    expected, offset = [], 0
    for i, raw in enumerate(lines):
        text = raw[:-1] if raw.endswith(b"\r") and i < len(lines) - 1 else raw
        expected.append(f"({path!r}, {offset})\t{text.decode('utf-8', 'replace')}")
        offset += len(raw) + 1
    return sorted(expected)


def file_records(path: Path, name: str) -> list[str]:
    """:func:`expected_records` for a file on disk, under ``name``."""
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":  # a final newline ends the last line; no empty line after it
        lines.pop()
    return expected_records(lines, name)


async def run_while(job: Any, background: Callable[[], Awaitable[None]],
                    timeout: float) -> CID:
    """Run a job while ``background`` (chaos, churn, polling) goes on; it
    stops when the job returns."""
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(background)
            root: CID = await job.run()
            nursery.cancel_scope.cancel()
    return root


def reference_counts(paths: list[Path]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                counts.update(WORD.findall(line))
    return dict(counts)


async def output_lines(node: Node, root: CID) -> list[str]:
    """Every line of every part of an output directory, in part order."""
    entries = await unixfs.list_directory(node.blocks, root)
    names = [e.name for e in entries]
    assert "_manifest.json" in names
    text = b""
    for entry in entries:
        if entry.name.startswith("part-"):
            text += await unixfs.read_range(node.blocks, entry.cid)
    # Records end with "\n" alone: a value may hold "\r" or "\x0c".
    return text.decode().split("\n")[:-1] if text else []


async def output_counts(node: Node, root: CID) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in await unixfs.list_directory(node.blocks, root):
        if entry.name.startswith("part-"):
            text = (await unixfs.read_range(node.blocks, entry.cid)).decode()
            for line in text.splitlines():
                key, value = line.rsplit("\t", 1)
                assert key not in out, f"key {key!r} appears twice"
                out[key] = int(value)
    return out


class Swarm:
    """Peer processes around a master node, killed and started at will."""

    def __init__(self, master: Node, base: Path) -> None:
        self.master = master
        self.base = base
        self.peers: list[PeerProcess] = []
        self.counter = 0

    def start(self, chaos: str | None = None, *, seed: int = 0, rate: float = 0.3,
              name: str | None = None) -> PeerProcess:
        self.counter += 1
        repo = self.base / (name or f"peer-{self.counter}")
        args = ["--bootstrap", self.master.multiaddrs[0], "--trust", str(self.master.peer_id)]
        if chaos is None:
            args += ["--workers", "1"]
        else:
            args += ["--seed", str(seed), "--rate", str(rate)]
        peer = PeerProcess(repo, args, chaos=chaos)
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.kill()


async def until_workers(master: Node, n: int) -> None:
    """Wait until ``n`` connected peers are known to speak the protocol."""
    from p2pmr.wire.framing import PROTOCOL_ID

    with trio.fail_after(30):
        while len(master.network.peers_speaking(PROTOCOL_ID)) < n:  # noqa: ASYNC110
            await trio.sleep(0.05)


def redone(master: object) -> int:
    """Attempts beyond the first, over all tasks of a finished job."""
    scheduler = master.scheduler  # type: ignore[attr-defined]
    return sum(t.attempts - 1 for phase in ("map", "reduce")
               for t in scheduler.phase_tasks(phase))
