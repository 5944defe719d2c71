"""Peers that read another repo's block store in place (``--read-store``), as
``p2pmr run --local-peers`` peers read their master's: input does not cross
the network to a process on the same disk, the store read is never written,
and a corrupt block there is neither used nor moved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster
from p2pmr.errors import CorruptBlock, StorageError
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.flatfs import FlatFS, FlatFSReader

from .conftest import peers
from .helpers import GUTENBERG, ROOT, run_cli
from .swarm import output_counts, reference_counts

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TEXT = GUTENBERG / "pg-grimm.txt"  # two leaves under a root


def _leaves(path: Path) -> list[CID]:
    root, blocks = unixfs.import_bytes(path.read_bytes())
    return [cid for cid, _ in blocks if cid != root]


def _flip_a_bit(repo: Path, cid: CID) -> Path:
    path = FlatFS(repo).path_of(cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def _listing(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``repo``, with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.stat()
            out[str(path.relative_to(repo))] = (info.st_size, info.st_mtime_ns)
    return out


def test_a_read_only_store_is_never_written_and_its_corrupt_copies_stay(tmp_path: Path
                                                                       ) -> None:
    repo, other = tmp_path / "own", tmp_path / "other"
    FlatFS(repo).blocks.mkdir(parents=True)
    data = b"a block\n"
    root, blocks = unixfs.import_bytes(data)
    FlatFS(other).write(root, blocks[0][1])
    bad = _flip_a_bit(other, root)
    before = _listing(other)
    reader = FlatFSReader(repo, [other])
    with pytest.raises(CorruptBlock) as info:
        reader.read(root)
    assert "left in place" in str(info.value) and info.value.moved_to is None
    with pytest.raises(StorageError):
        FlatFS(other, read_only=True).write(root, blocks[0][1])
    assert _listing(other) == before and bad.exists()
    # An intact copy in the own store comes first.
    FlatFS(repo).write(root, blocks[0][1])
    assert reader.read(root) == blocks[0][1]
    assert _listing(other) == before


async def _seeded_job(master: Node, tmp_path: Path, corrupt: CID | None = None
                      ) -> tuple[Path, Path, dict[str, tuple[int, int]]]:
    """Run word count on one peer that reads a third repo holding the input.

    Returns the read store, the peer's own repo, and the read store's
    listing from before the job.
    """
    cid = await master.add_path(TEXT)
    seeded = tmp_path / "seeded"
    await trio.to_thread.run_sync(lambda: run_cli("add", str(TEXT), "--repo", str(seeded)))
    if corrupt is not None:
        _flip_a_bit(seeded, corrupt)
    before = _listing(seeded)
    async with peers(master, tmp_path / "peers", 1, extra=("--read-store", str(seeded))):
        with trio.fail_after(90):
            output = await InitMaster(master, cid, job=load_job_file(WORDCOUNT),
                                      n_reducers=1).run()
        assert await output_counts(master, output) == reference_counts([TEXT])
    return seeded, tmp_path / "peers" / "peer-0", before


async def test_a_peer_maps_input_in_place_from_a_read_store(master: Node,
                                                            tmp_path: Path) -> None:
    seeded, own, before = await _seeded_job(master, tmp_path)
    # The input never reached the peer's store, so it never crossed the network.
    assert not any(FlatFS(own).path_of(leaf).exists() for leaf in _leaves(TEXT))
    assert master.bitswap is not None
    assert master.bitswap.stats.bytes_sent < TEXT.stat().st_size // 4  # the job's code only
    assert _listing(seeded) == before


async def test_a_corrupt_block_in_a_read_store_is_fetched_instead(master: Node,
                                                                  tmp_path: Path) -> None:
    leaves = _leaves(TEXT)
    seeded, own, before = await _seeded_job(master, tmp_path, corrupt=leaves[0])
    # Neither used (the output is exact) nor moved: not the peer's to touch.
    assert _listing(seeded) == before
    with pytest.raises(CorruptBlock):
        FlatFS(seeded, read_only=True).read(leaves[0])
    # The peer fetched that block over Bitswap, and only that one.
    assert FlatFS(own).read(leaves[0]) is not None
    assert not any(FlatFS(own).path_of(leaf).exists() for leaf in leaves[1:])


def test_a_read_store_that_is_not_a_repo_is_refused_at_start(tmp_path: Path) -> None:
    result = run_cli("peer", "--repo", str(tmp_path / "peer"), "--read-store",
                     str(tmp_path / "nowhere"), check=False, timeout=60)
    assert result.returncode == 1
    assert b"has no blocks/ directory: not a p2pmr repo" in result.stderr



async def test_local_peers_read_each_others_map_outputs_in_place(master: Node,
                                                                 tmp_path: Path) -> None:
    """Sibling peers on one disk: a reducer reads the other peer's map outputs
    where they lie, so no peer's store ends up with a copy of another's blocks
    (nor of the master's input), and the shuffle never crosses the network."""
    from collections import Counter

    from p2pmr.localswarm import local_swarm

    cid = await master.add_path(GUTENBERG)
    base = tmp_path / "peers"
    async with local_swarm(2, base, master.multiaddrs[0], str(master.peer_id), workers=1,
                           extra_args=("--read-store", str(master.repo)), siblings=True):
        # A split per block: map outputs on both peers, for both reducers.
        job = InitMaster(master, cid, job=load_job_file(ROOT / "tests" / "jobs" / "lines.py"),
                         n_reducers=2, split_size=0)
        with trio.fail_after(120):
            root = await job.run()
        text = b"".join([await unixfs.read_range(master.blocks, e.cid)
                         for e in await unixfs.list_directory(master.blocks, root)
                         if e.name.startswith("part-")])
    got = {k: int(v) for k, v in (line.rsplit("\t", 1) for line in text.decode().split("\n")[:-1])}
    expected: Counter[str] = Counter()
    for path in sorted(GUTENBERG.iterdir()):
        raw = path.read_bytes()
        pieces = raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n")
        expected.update(p.removesuffix(b"\r").decode("utf-8", "replace") for p in pieces)
    assert got == dict(expected)
    held = [{p.name for p in (base / f"peer-{i}" / "blocks").rglob("*.data")} for i in range(2)]
    assert held[0] and held[1]
    assert not held[0] & held[1], f"{len(held[0] & held[1])} blocks were copied between peers"
    inputs = {FlatFS(master.repo).path_of(c).name
              for path in sorted(GUTENBERG.iterdir()) for c in _leaves(path)}
    assert not (held[0] | held[1]) & inputs
