"""Partitioners: a job's own ``partition(key, n_reducers)``, and the total-order
sort of ``examples/sort.py``, whose range boundaries are sampled from the input."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster, JobFailed, TotalOrder
from p2pmr.encoding import MSGPACK, group_pairs, partition_of
from p2pmr.errors import EncodingError, JobError
from p2pmr.job import Job, JobDescriptor, dump_job, load_job_file
from p2pmr.node import Node
from p2pmr.partition import bind_partition, boundaries_of, sample_indices
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.testing import memory_swarm
from p2pmr.wire.messages import Assignment, JobSpec, MapTask, Phase, TaskId, decode, encode

from .conftest import peers
from .helpers import ROOT

SORT = ROOT / "examples" / "sort.py"
JOBS = ROOT / "tests" / "jobs"

# Lines with duplicates, empty lines, tabs, case, non-ASCII, CRLF and bytes
# that are not UTF-8 (which decode to U+FFFD, and sort as that).
_PIECES = [b"", b"apple", b"Apple", b"banana", b"zebra", "café".encode(), "日本".encode(),
           "\U0001f389".encode(), b"a\tb", b" lead", b"9", b"10", b"\xff", b"~", b"\r"]


def _text(rng: random.Random, lines: int, *, final_newline: bool = True) -> bytes:
    out = []
    for _ in range(lines):
        words = [rng.choice(_PIECES) for _ in range(rng.randint(0, 3))]
        line = b" ".join(words) + (b"%d" % rng.randint(0, 999) if rng.random() < 0.7 else b"")
        out.append(line + (b"\r" if rng.random() < 0.1 else b""))
    return b"\n".join(out) + (b"\n" if final_newline else b"")


def _reference(files: Sequence[bytes]) -> list[str]:
    """Every line of every file (spec section 5), sorted as Python sorts."""
    lines = []
    for data in files:
        raws = data.split(b"\n")
        if raws[-1] == b"":
            raws.pop()
        for raw in raws:
            text = raw.decode("utf-8", "replace")
            lines.append(text[:-1] if text.endswith("\r") else text)
    return sorted(lines)


async def _parts(node: Node, root: CID) -> list[list[str]]:
    """Each part file's lines, without the empty value after the tab."""
    parts = []
    for entry in await unixfs.list_directory(node.blocks, root):
        if entry.name.startswith("part-"):
            text = (await unixfs.read_range(node.blocks, entry.cid)).decode()
            lines = text.split("\n")[:-1]
            assert all(line.endswith("\t") for line in lines)
            parts.append([line[:-1] for line in lines])
    return parts


def _balanced(parts: list[list[str]]) -> None:
    total = sum(len(p) for p in parts)
    assert all(0.1 * total < len(p) < 0.5 * total for p in parts), [len(p) for p in parts]


# -- the pieces ---------------------------------------------------------------------


def test_the_sample_rule_and_the_quantiles() -> None:
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(10, 4) == [1, 3, 6, 8]   # the middle of each quarter
    assert sample_indices(100, 1) == [50]
    keys = [f"k{i:02d}" for i in range(10)][::-1]
    assert boundaries_of(keys, 4) == ["k02", "k05", "k07"]
    assert boundaries_of(["x"] * 5, 3) == ["x", "x"]  # equal boundaries stay
    assert boundaries_of([], 4) == [] and boundaries_of(keys, 1) == []
    with pytest.raises(TypeError, match="do not compare"):
        boundaries_of(["a", 1], 2)


def test_total_order_puts_each_range_in_its_reducer() -> None:
    order = bind_partition(TotalOrder(), MSGPACK.dumps(["c", "f"]), MSGPACK, 3)
    assert order is not None
    assert [order(k, 3) for k in ["a", "c", "d", "f", "z"]] == [0, 1, 1, 2, 2]
    with pytest.raises(JobError, match="no partition boundaries"):
        bind_partition(TotalOrder(), None, MSGPACK, 3)
    with pytest.raises(EncodingError, match="at most 2 keys"):
        bind_partition(TotalOrder(), MSGPACK.dumps(["a", "b", "c"]), MSGPACK, 3)
    with pytest.raises(JobError, match="positive"):
        TotalOrder(blocks=0)


@pytest.mark.parametrize("value", [4, -1, True, "1", 1.0, None])
def test_a_partition_outside_the_reducers_is_a_clear_error(value: object) -> None:
    checked = bind_partition(lambda key, n: value, None, MSGPACK, 4)
    assert checked is not None
    with pytest.raises(ValueError, match=r"partition\('k', 4\) returned .*an int from 0 to 3"):
        checked("k", 4)


def test_group_pairs_partitions_by_the_jobs_function() -> None:
    pairs = [("bb", 1), ("a", 1), ("ccc", 1), ("a", 2), (("t", 1), 5)]
    by_len = bind_partition(lambda key, n: len(key) - 1, None, MSGPACK, 3)

    def relabel(key: object, values: Iterator[int]) -> Iterator[tuple[object, int]]:
        yield ("zz" if key == "a" else key), sum(values)  # a combiner that changes keys

    parts, records_in, records_out = group_pairs(pairs, MSGPACK, 3, relabel, by_len)
    assert (records_in, records_out) == (5, 4)
    assert [[MSGPACK.loads(kb) for kb, _ in part] for part in parts] == \
        [[], ["bb", "zz", ("t", 1)], ["ccc"]]
    # Without one, crc32 as ever: the golden vectors pin those bytes.
    parts, _, _ = group_pairs([("bb", 1)], MSGPACK, 3)
    assert parts[partition_of(MSGPACK.dumps("bb"), 3)] == [(MSGPACK.dumps("bb"), [1])]


def test_the_descriptor_and_the_job_spec_carry_the_boundaries() -> None:
    code, input_cid, bounds = CID.hash(b"code"), CID.hash(b"input"), CID.hash(b"bounds")
    plain = JobDescriptor(code, input_cid, 4)
    assert b"boundaries" not in plain.to_json()  # other jobs keep their CIDs
    sorted_job = JobDescriptor(code, input_cid, 4, boundaries=bounds)
    assert JobDescriptor.from_json(sorted_job.to_json()) == sorted_job
    assert JobDescriptor.from_json(plain.to_json()).boundaries is None
    task = MapTask(TaskId(CID.hash(b"job"), Phase.MAP, 0), records=CID.hash(b"records"))
    for spec in (JobSpec(CID.hash(b"job"), code, 4, boundaries=bounds),
                 JobSpec(CID.hash(b"job"), code, 4)):
        assignment = Assignment(spec, maps=(task,))
        assert decode(encode(assignment)) == assignment


def test_a_job_without_a_partitioner_pickles_as_before() -> None:
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    assert "partition" not in wordcount.__getstate__()
    sort = load_job_file(SORT)
    assert isinstance(sort.partition, TotalOrder) and sort.partition.blocks == 64
    assert "partition" in sort.__getstate__()
    assert Job(reduce=max, map=max, partition=divmod).__getstate__()["partition"] is divmod
    assert dump_job(wordcount) == dump_job(load_job_file(ROOT / "examples" / "wordcount.py"))


# -- whole jobs -----------------------------------------------------------------------


async def test_sort_concatenates_to_sorted_and_repeats_its_cid(tmp_path: Path) -> None:
    """Several files cut into small blocks (more than the sample reads, and
    lines across their edges): the parts concatenate to ``sorted()`` of every
    line, share the lines fairly, and a second run gives the same CID."""
    rng = random.Random(10)
    files = [_text(rng, 3000), _text(rng, 1500, final_newline=False), b"", _text(rng, 2500)]
    directory = tmp_path / "input"
    directory.mkdir()
    for i, data in enumerate(files):
        (directory / f"f{i}.txt").write_bytes(data)
    job = load_job_file(SORT)
    roots = []
    for _ in range(2):
        async with memory_swarm(peers=2) as swarm:
            cid = await unixfs.add_path(swarm.master.blocks, directory,
                                        unixfs.ImportOptions(chunk_size=400))
            master = InitMaster(swarm.master, cid, job=job, n_reducers=4, split_size=20_000)
            with trio.fail_after(60):
                roots.append(await master.run())
            parts = await _parts(swarm.master, roots[-1])
            assert master.plan is not None and len(master.plan.tasks) > 4
    assert roots[0] == roots[1]
    assert [line for part in parts for line in part] == _reference(files)
    _balanced(parts)


async def test_a_resumed_sort_keeps_its_boundaries() -> None:
    """The journaled descriptor names the boundaries: a resumed run uses them
    rather than sampling again, and a finished job gives its output back."""
    data = _text(random.Random(12), 500)
    async with memory_swarm(peers=1) as swarm:
        cid = await swarm.master.add_bytes(data)
        job = load_job_file(SORT)
        first = InitMaster(swarm.master, cid, job=job, n_reducers=2)
        root = await first.run()
        again = InitMaster(swarm.master, cid, job=job, n_reducers=2, resume=True)
        with trio.fail_after(30):
            assert await again.run() == root
        assert again.job_cid == first.job_cid and first.job_cid is not None
        descriptor = JobDescriptor.from_json(
            await unixfs.read_range(swarm.master.blocks, first.job_cid))
        assert descriptor.boundaries is not None


async def test_one_reducer_needs_no_sample() -> None:
    data = b"b\nc\na\n"
    async with memory_swarm(peers=1) as swarm:
        cid = await swarm.master.add_bytes(data)
        master = InitMaster(swarm.master, cid, job=load_job_file(SORT), n_reducers=1)
        root = await master.run()
        assert await _parts(swarm.master, root) == [["a", "b", "c"]]
        assert master.job_cid is not None
        descriptor = JobDescriptor.from_json(
            await unixfs.read_range(swarm.master.blocks, master.job_cid))
        assert descriptor.boundaries is not None
        assert await unixfs.read_range(swarm.master.blocks, descriptor.boundaries) == b"\x90"


async def test_sort_on_peer_processes(master: Node, tmp_path: Path) -> None:
    """Real peers bind the sampled boundaries the job spec names, and give the
    output CID that a swarm in memory gives for the same input."""
    data = _text(random.Random(11), 40_000)  # two leaf blocks
    cid = await master.add_bytes(data)
    job = load_job_file(SORT)
    async with peers(master, tmp_path / "peers", 2):
        with trio.fail_after(120):
            root = await InitMaster(master, cid, job=job, n_reducers=3).run()
        parts = await _parts(master, root)
    assert [line for part in parts for line in part] == _reference([data])
    _balanced(parts)
    async with memory_swarm(peers=1) as swarm:
        assert await swarm.master.add_bytes(data) == cid
        assert await InitMaster(swarm.master, cid, job=job, n_reducers=3).run() == root


async def test_a_partitioner_of_the_jobs_own() -> None:
    async with memory_swarm(peers=2) as swarm:
        cid = await swarm.master.add_bytes(b"a bb ccc dddd eeeee ffffff\nbb a gggggggg\n")
        root = await InitMaster(swarm.master, cid, job=load_job_file(JOBS / "by_length.py"),
                                n_reducers=3).run()
        parts = await _parts_raw(swarm.master, root)
    assert parts == [["a\t2", "bb\t2"], ["ccc\t1", "dddd\t1", "eeeee\t1"],
                     ["ffffff\t1", "gggggggg\t1"]]


async def _parts_raw(node: Node, root: CID) -> list[list[str]]:
    out = []
    for entry in await unixfs.list_directory(node.blocks, root):
        if entry.name.startswith("part-"):
            out.append((await unixfs.read_range(node.blocks, entry.cid)).decode().splitlines())
    return out


async def test_a_bad_partition_fails_the_job_clearly() -> None:
    async with memory_swarm(peers=2) as swarm:
        cid = await swarm.master.add_bytes(b"apple\nbanana\n")
        job = InitMaster(swarm.master, cid, job=load_job_file(JOBS / "bad_partition.py"),
                         n_reducers=2)
        with trio.fail_after(60), pytest.raises(
                JobFailed, match=r"partition\('banana', 2\) returned 2; it must return an int "
                                 r"from 0 to 1"):
            await job.run()


async def test_keys_a_total_order_cannot_sort_fail_before_the_map_phase() -> None:
    async with memory_swarm(peers=1) as swarm:
        cid = await swarm.master.add_bytes(b"apple\nbanana\n")
        job = InitMaster(swarm.master, cid, job=load_job_file(JOBS / "mixed_keys.py"),
                         n_reducers=2)
        with trio.fail_after(60), pytest.raises(
                JobFailed, match=r"sampling the input for TotalOrder failed: .*do not compare"):
            await job.run()
        assert job.get_map_status().complete == 0
