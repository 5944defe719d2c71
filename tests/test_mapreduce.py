"""The engine end to end: a master here, real peer processes on 127.0.0.1."""

from __future__ import annotations

import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster, JobFailed
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID

from .conftest import peers
from .helpers import GUTENBERG, ROOT, copy_into, gutenberg_files
from .swarm import Swarm, expected_records, output_lines, run_while

WORD = re.compile(r"[^\W\d_]+")
JOBS = Path(__file__).parent / "jobs"


def reference_wordcount(paths: list[Path]) -> list[str]:
    counts: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                counts.update(WORD.findall(line))
    return sorted(f"{w}\t{c}" for w, c in counts.items())


# Map tasks of one leaf block each, of runs of two or three blocks, and of
# whole files (the default aims at 4 MiB): lines and words cut by block edges
# are exact whether the edge lies inside a task's run or between two runs.
SPLIT_SIZES = [0, 600_000, None]


@pytest.mark.parametrize("split_size", SPLIT_SIZES)
async def test_wordcount_directory_matches_sequential(master: Node, tmp_path: Path,
                                                      split_size: int | None) -> None:
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    texts = gutenberg_files()
    cid = await master.add_path(copy_into(tmp_path / "books", texts))
    # The per-file 256 KiB cuts fall mid-word at "drum|s" and "g|rindstone".
    cuts = []
    for path in texts:
        data = path.read_bytes()
        cuts += [data[o - 4:o] + b"|" + data[o:o + 6] for o in range(262144, len(data), 262144)]
    assert b"drum|s, an" in b" ".join(cuts) or any(c.startswith(b"drum|s") for c in cuts)
    assert any(c.startswith(b"e, g|rinds") or b"g|rindst" in c for c in cuts)

    sized = {} if split_size is None else {"split_size": split_size}
    async with peers(master, tmp_path / "peers", 3):
        job = InitMaster(master, cid, job=wordcount, n_reducers=5, **sized)
        root = await job.run()
    assert sorted(await output_lines(master, root)) == reference_wordcount(texts)
    status, counts = job.get_map_status(), job.manifest["counts"]
    assert status.complete == status.total == counts["splits"] + counts["boundary_tasks"]
    blocks = sum(-(-p.stat().st_size // 262144) for p in texts)
    if split_size == 0:
        assert counts["splits"] == blocks == 17
    else:
        assert len(texts) <= counts["splits"] < blocks


async def test_wordcount_concatenated_file_and_per_line_map(master: Node,
                                                             tmp_path: Path) -> None:
    """One file of all eight texts: a dozen cuts fall mid-word or mid-line."""
    data = b"".join(p.read_bytes() for p in gutenberg_files())
    big = tmp_path / "all.txt"
    big.write_bytes(data)
    cid = await master.add_path(big)
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    # Two ways to map, and two ways to cut the input into tasks: the part
    # files of a word count depend on neither.
    per_line = InitMaster(master, cid, wordcount.map, wordcount.reduce, 3,
                          combine_fn=wordcount.combine, split_size=600_000)
    async with peers(master, tmp_path / "peers", 3):
        batch_root = await InitMaster(master, cid, job=wordcount, n_reducers=3).run()
        line_root = await per_line.run()
    expected = reference_wordcount([big])
    assert sorted(await output_lines(master, batch_root)) == expected
    # Same records, so the same part files, byte for byte (the manifests name
    # different code, so the directories differ).
    parts = [[(e.name, e.cid) for e in await unixfs.list_directory(master.blocks, root)
              if e.name.startswith("part-")] for root in (batch_root, line_root)]
    assert parts[0] == parts[1]


async def test_indexer_matches_sequential(master: Node, tmp_path: Path) -> None:
    cid = await master.add_path(GUTENBERG)
    async with peers(master, tmp_path / "peers", 3):
        indexer = load_job_file(ROOT / "examples" / "indexer.py")
        root = await InitMaster(master, cid, job=indexer, n_reducers=4).run()
    index: dict[str, set[str]] = defaultdict(set)
    for path in sorted(GUTENBERG.iterdir()):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            for word in WORD.findall(line):
                index[word].add(path.name)
    expected = sorted(f"{w}\t{','.join(sorted(files))}" for w, files in index.items())
    assert sorted(await output_lines(master, root)) == expected


@pytest.mark.parametrize(("group", "split_size"),
                         [(1, 0), (2, 0), (128, 0), (1, 600_000), (2, 1_000_000), (1, None)])
async def test_records_are_exact_keys_and_lines(master: Node, tmp_path: Path, group: int,
                                                split_size: int | None) -> None:
    """Every line exactly once, with its (path, offset) key, across odd boundaries,
    including a line of several blocks that crosses boundary-task groups."""
    lines = [b"short", b"", b"x" * 700_000, b"crlf line\r", "caf\u00e9".encode(), b"\xff\xfe bad",
             b"y" * 600_000, b"tail without newline"]
    data = b"\n".join(lines)
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    (tree / "f.txt").write_bytes(data)
    (tree.parent / "empty.txt").write_bytes(b"")
    cid = await master.add_path(tree.parent)
    async with peers(master, tmp_path / "peers", 2):
        sized = {} if split_size is None else {"split_size": split_size}
        job = InitMaster(master, cid, job=load_job_file(JOBS / "records.py"), n_reducers=2,
                         boundary_group=group, **sized)
        root = await job.run()
    splits = job.manifest["counts"]["splits"]  # the empty file has none
    assert splits == 5 if split_size == 0 else 1 <= splits < 5
    assert job.manifest["counts"]["boundary_tasks"] == -(-(splits - 1) // group)
    assert sorted(await output_lines(master, root)) == expected_records(lines, "sub/f.txt")


async def test_lines_spanning_many_blocks_stay_whole(master: Node, tmp_path: Path) -> None:
    """Many lines longer than a block, so most splits hold no newline at all and
    their fragments (too long to travel inline) are read back by the master
    while other splits complete and boundaries get stitched around them."""
    rng = random.Random(7)
    lines = [bytes([97 + i % 26]) * rng.randrange(200_000, 900_000) for i in range(10)]
    lines[3:3] = [b"", b"short"]
    (tmp_path / "long.txt").write_bytes(b"\n".join(lines))
    cid = await master.add_path(tmp_path / "long.txt")
    async with peers(master, tmp_path / "peers", 3):
        for group, split_size in ((1, 0), (2, 0), (3, 0), (1, 600_000), (2, 1_000_000)):
            job = InitMaster(master, cid, job=load_job_file(JOBS / "records.py"), n_reducers=2,
                             boundary_group=group, split_size=split_size)
            with trio.fail_after(120):
                root = await job.run()
            assert sorted(await output_lines(master, root)) == expected_records(lines, "")


async def test_empty_input_and_more_reducers_than_keys(master: Node, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    small = tmp_path / "small.txt"
    small.write_bytes(b"one two\n")
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with peers(master, tmp_path / "peers", 2):
        root = await InitMaster(master, await master.add_path(empty), job=wordcount,
                                n_reducers=3).run()
        assert await output_lines(master, root) == []
        names = [e.name for e in await unixfs.list_directory(master.blocks, root)]
        assert names == ["_manifest.json", "_provenance.json", "part-00000", "part-00001",
                         "part-00002"]
        root = await InitMaster(master, await master.add_path(small), job=wordcount,
                                n_reducers=7).run()
    assert sorted(await output_lines(master, root)) == ["one\t1", "two\t1"]
    assert len(await unixfs.list_directory(master.blocks, root)) == 9  # 7 parts, 2 files


async def test_fifty_mib_two_level_dag(master: Node, tmp_path: Path) -> None:
    corpus = b"".join(p.read_bytes() for p in gutenberg_files())
    size = 50 * 1024 * 1024
    data = (corpus * (size // len(corpus) + 1))[:size]
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    cid = await master.add_path(path)
    segments = await unixfs.file_segments(master.blocks, cid)
    assert len(segments) == 200  # 200 leaves > 174 links: a two-level DAG
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with peers(master, tmp_path / "peers", 2):
        root = await InitMaster(master, cid, job=wordcount, n_reducers=4).run()
    assert sorted(await output_lines(master, root)) == reference_wordcount([path])


async def test_missing_input_fails_clearly_within_deadline(master: Node, tmp_path: Path) -> None:
    ghost = CID.hash(b"this input exists nowhere")
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with peers(master, tmp_path / "peers", 1):
        job = InitMaster(master, ghost, job=wordcount, n_reducers=2, input_timeout=3)
        with trio.fail_after(15):
            with pytest.raises(JobFailed, match="could not be resolved"):
                await job.run()


async def test_map_that_raises_fails_with_remote_traceback(master: Node, tmp_path: Path) -> None:
    cid = await master.add_path(GUTENBERG / "pg-frankenstein.txt")
    async with peers(master, tmp_path / "peers", 2):
        job = InitMaster(master, cid, job=load_job_file(JOBS / "raises.py"), n_reducers=2)
        with trio.fail_after(60), pytest.raises(JobFailed) as info:
            await job.run()
    message = str(info.value)
    assert "ValueError: refusing to map" in message
    assert "Remote traceback" in message and 'raise ValueError(f"refusing' in message
    assert "failed 3 times" in message


async def test_worker_death_is_survived(master: Node, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    os.environ["P2PMR_TEST_MARKER"] = str(marker)
    try:
        job_def = load_job_file(JOBS / "exit_once.py")
    finally:
        del os.environ["P2PMR_TEST_MARKER"]
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    async with peers(master, tmp_path / "peers", 1) as swarm:
        root = await InitMaster(master, cid, job=job_def, n_reducers=1).run()
        assert all(p.process.returncode is None for p in swarm)  # the peer lived on
    assert marker.exists()  # a worker really died
    lines = (GUTENBERG / "pg-metamorphosis.txt").read_bytes().count(b"\n")
    assert await output_lines(master, root) == [f"lines\t{lines}"]


async def test_status_moves_from_zero_to_total(master: Node, tmp_path: Path) -> None:
    cid = await master.add_path(GUTENBERG)
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    job = InitMaster(master, cid, job=wordcount, n_reducers=3)
    seen: list[tuple[int, int, int, int]] = []

    async def poll() -> None:
        while True:
            m, r = job.get_map_status(), job.get_reduce_status()
            seen.append((m.complete, m.total, r.complete, r.total))
            await trio.sleep(0.01)

    async with peers(master, tmp_path / "peers", 2):
        await run_while(job, poll, 120)
    assert seen[0][0] == 0 and seen[0][2] == 0
    final_map, final_reduce = job.get_map_status(), job.get_reduce_status()
    assert final_map.complete == final_map.total > 0 and final_reduce.complete == 3
    maps = [s[0] for s in seen]
    assert maps == sorted(maps)  # never goes backwards
    assert any(0 < s[0] < s[1] for s in seen)  # observed mid-way


async def test_a_peer_run_by_hand_logs_each_task_it_runs(master: Node, tmp_path: Path) -> None:
    """Whoever runs ``p2pmr peer`` sees, in its own terminal, a line per task."""
    swarm = Swarm(master, tmp_path / "peers")
    try:
        peer = await trio.to_thread.run_sync(swarm.start)
        cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
        job = InitMaster(master, cid, job=load_job_file(ROOT / "examples" / "wordcount.py"),
                         n_reducers=2, split_size=2**18)
        with trio.fail_after(120):
            await job.run()
    finally:
        swarm.close()
    tasks = job.get_map_status().total + 2
    done = re.findall(r"INFO +p2pmr\.peer\.tasks: (map|reduce) task \d+ of job \w+ done in "
                      r"[\d.]+s: \d+ records in, \d+ out", "".join(peer.stderr_lines))
    assert len(done) >= tasks and done.count("reduce") >= 2, peer.stderr
