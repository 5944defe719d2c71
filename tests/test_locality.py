"""Splits run where their blocks already are."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.peer.id import ID as PeerID

from p2pmr import InitMaster
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.records import SplitInfo
from p2pmr.storage import unixfs
from p2pmr.storage.flatfs import FlatFS
from p2pmr.wire.framing import PROTOCOL_ID

from .helpers import ROOT, gutenberg_files, run_cli
from .swarm import Swarm, output_counts, reference_counts

WORDCOUNT = ROOT / "examples" / "wordcount.py"


def _books(base: Path, count: int, size: int) -> list[Path]:
    """``count`` distinct texts of about ``size`` bytes each."""
    corpus = b"".join(p.read_bytes() for p in gutenberg_files())
    base.mkdir(parents=True)
    paths = []
    for i in range(count):
        start = (i * len(corpus)) // count
        data = (corpus[start:] + corpus)[:size]
        path = base / f"book-{i}.txt"
        path.write_bytes(data[:data.rfind(b"\n") + 1])
        paths.append(path)
    return paths


async def test_splits_run_on_the_peers_that_hold_them(master: Node, swarm: Swarm,
                                                      tmp_path: Path) -> None:
    """Each of three peers holds one file in advance: the master learns it by
    want-have and runs every split on its holder, so no input crosses."""
    books = _books(tmp_path / "books", 3, 3 * 1024 * 1024)
    cid = await master.add_path(books[0].parent)
    peers = []
    for i, book in enumerate(books):
        repo = swarm.base / f"holder-{i}"
        await trio.to_thread.run_sync(run_cli, "add", str(book), "--repo", str(repo))
        peers.append(await trio.to_thread.run_sync(lambda i=i: swarm.start(name=f"holder-{i}")))
    # Data placed in advance, on peers that are there: all three have joined.
    with trio.fail_after(30):
        while len(master.network.peers_speaking(PROTOCOL_ID)) < 3:  # noqa: ASYNC110
            await trio.sleep(0.05)
    job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=2,
                     split_size=1024 * 1024)
    with trio.fail_after(120):
        root = await job.run()
    assert await output_counts(master, root) == reference_counts(books)

    assert job.locality is not None
    splits = [t for t in job.scheduler.phase_tasks("map") if isinstance(t.payload, SplitInfo)]
    assert len(splits) >= 6
    on_holder = [t for t in splits if t.completed_by in job.locality.holders(t.index)]
    assert len(on_holder) >= 0.9 * len(splits), [
        (t.index, str(t.completed_by), [str(p) for p in job.locality.holders(t.index)])
        for t in splits]
    report = job.locality.report
    assert report.held_splits == len(splits)
    assert report.bytes_moved <= 0.1 * sum(p.stat().st_size for p in books)
    # A peer never fetched the blocks of the files it did not hold.
    for i, peer in enumerate(peers):
        store = FlatFS(peer.repo)
        for j, book in enumerate(books):
            if i == j:
                continue
            leaves = [c for c, _ in unixfs.import_bytes(book.read_bytes())[1]]
            held = sum(store.path_of(c).exists() for c in leaves)
            assert held <= 0.1 * len(leaves), f"peer {i} fetched {held} blocks of file {j}"
    assert all(isinstance(t.completed_by, PeerID) for t in splits)
