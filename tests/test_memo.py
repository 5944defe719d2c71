"""Memoised tasks: a task already computed, by any earlier job in this repo,
is taken from the memo instead of run, and the output is the fresh run's.

The command-line tests run real ``p2pmr run`` processes with real local
peers; the in-process ones check the master's rules quickly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import trio

from p2pmr import InitMaster
from p2pmr.job import load_job_file
from p2pmr.master.memo import JobFacts, memo_key
from p2pmr.master.plan import ReduceWork
from p2pmr.node import Node
from p2pmr.records import SplitInfo
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.testing import memory_swarm

from .helpers import GUTENBERG, ROOT, PeerProcess, forge_output, run_cli
from .swarm import output_counts, reference_counts

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TEXTS = sorted(GUTENBERG.glob("pg-*.txt"))
_SUMMARY = re.compile(r"tasks: (\d+) run, (\d+) reused from the memo, (\d+) resumed")


def _run(repo: Path, data: Path, *extra: str, job: Path = WORDCOUNT,
         reducers: int = 2) -> tuple[str, int, int]:
    """(output CID, tasks run, tasks reused) of one ``p2pmr run``."""
    result = run_cli("run", str(job), "--input", str(data), "--reducers", str(reducers),
                     "--local-peers", "2", "--split-size", "1", "--repo", str(repo),
                     "--no-progress", *extra, timeout=180)
    return (result.stdout.decode().split()[-1], *_counts(result.stderr.decode()))


def _counts(stderr: str) -> tuple[int, int]:
    """(tasks run, tasks reused) from a run's summary."""
    found = _SUMMARY.search(stderr)
    assert found, stderr
    return int(found[1]), int(found[2])


def _texts(data: Path, count: int) -> Path:
    data.mkdir()
    for text in TEXTS[:count]:
        shutil.copy(text, data / text.name)
    return data


def test_reruns_take_what_is_known_and_run_only_what_is_new(tmp_path: Path) -> None:
    """A job run again runs nothing; a directory that gains a file runs the new
    file's split and the reduces; a file that grows runs its last split. Each
    output is the CID a fresh run gives, and the memo outlives each master."""
    data = _texts(tmp_path / "data", 8)
    repo = tmp_path / "repo"
    first, ran, reused = _run(repo, data)
    assert ran > 8 and reused == 0

    again, ran_again, reused_again = _run(repo, data)
    assert (again, ran_again, reused_again) == (first, 0, ran)

    # A ninth, small file: one split, no boundary task; every reduce sees new words.
    (data / "pg-zz-extra.txt").write_bytes(TEXTS[0].read_bytes()[:50_000] + b"\nzebra\n")
    grown, ran_grown, reused_grown = _run(repo, data)
    assert ran_grown == 1 + 2 and reused_grown == ran - 2
    fresh, ran_fresh, reused_fresh = _run(tmp_path / "fresh", data)
    assert grown == fresh and reused_fresh == 0 and ran_fresh == ran + 1

    # One file grows by 1%: only its last split runs again, and the reduces.
    target = data / TEXTS[1].name
    body = target.read_bytes()
    target.write_bytes(body + body[:len(body) // 100])
    appended, ran_appended, _ = _run(repo, data)
    assert ran_appended == 1 + 2
    assert appended == _run(tmp_path / "fresh-2", data, "--fresh")[0]


def test_another_job_or_reducer_count_reuses_nothing(tmp_path: Path) -> None:
    """The memo key holds the code's CID and the number of reducers: a job
    file edited (even in a comment: its source travels with it) or another
    reducer count runs everything again. ``--fresh`` runs everything too."""
    data = _texts(tmp_path / "data", 2)
    repo = tmp_path / "repo"
    first, ran, _ = _run(repo, data)
    assert _run(repo, data, reducers=3)[1:] == (ran - 2 + 3, 0)
    edited = tmp_path / "wordcount.py"
    edited.write_text(WORDCOUNT.read_text() + "\n# edited\n")
    out, ran_edited, reused_edited = _run(repo, data, job=edited)
    assert (ran_edited, reused_edited) == (ran, 0) and out != first  # its manifest names it
    assert _run(repo, data, "--fresh")[1:] == (ran, 0)


def test_reuse_takes_another_masters_record_trusted_or_checked(tmp_path: Path) -> None:
    """``--reuse`` across repos, blocks fetched over the network from a peer
    on the first repo: a record signed by a trusted master is taken whole;
    an untrusted one is taken after a sample of its tasks ran again; a lying
    one is refused whole (every task runs, and the output is still exact)."""
    data = _texts(tmp_path / "data", 3)
    first = run_cli("run", str(WORDCOUNT), "--input", str(data), "--reducers", "2",
                    "--local-peers", "2", "--split-size", "1", "--repo", str(tmp_path / "a"),
                    "--no-progress", timeout=180)
    output = first.stdout.decode().split()[-1]
    found = re.search(r"tasks: (\d+) run.*attestation (\S+)", first.stderr.decode())
    assert found, first.stderr.decode()
    total, attestation = int(found[1]), found[2]
    signer = run_cli("id", "--repo", str(tmp_path / "a")).stdout.decode().split()[-1]
    lying = forge_output(tmp_path / "a", output, "record")
    with PeerProcess(tmp_path / "a") as server:  # serves the first repo's blocks
        where = ("--bootstrap", server.addr)
        trusted = _run(tmp_path / "b", data, "--reuse", attestation, "--trust-master", signer,
                       *where)
        assert trusted == (output, 0, total)

        checked = run_cli("run", str(WORDCOUNT), "--input", str(data), "--reducers", "2",
                          "--local-peers", "2", "--split-size", "1", "--no-progress",
                          "--repo", str(tmp_path / "c"), "--reuse", attestation, *where,
                          timeout=240)
        assert re.search(r"checked by sampling [3-9] of \d+ task", checked.stderr.decode()), \
            checked.stderr.decode()
        assert checked.stdout.decode().split()[-1] == output
        assert _counts(checked.stderr.decode()) == (0, total)

        refused = run_cli("run", str(WORDCOUNT), "--input", str(data), "--reducers", "2",
                          "--local-peers", "2", "--split-size", "1", "--no-progress",
                          "--repo", str(tmp_path / "d"), "--reuse", lying,
                          "--reuse-sample", "100%", *where, timeout=240)
        stderr = refused.stderr.decode()
        assert "refused: map task 0" in stderr, stderr
        assert refused.stdout.decode().split()[-1] == output
        assert _counts(stderr) == (total, 0)


async def test_memo_status_verification_and_damaged_entries() -> None:
    """In one process: the status API counts reused tasks; an entry recorded
    by a job that accepted one peer's word is not enough for ``verify=2``; a
    damaged entry is ignored (with a warning) and its task runs."""
    async with memory_swarm(peers=2) as swarm:
        node = swarm.master
        cid = await unixfs.add_path(node.blocks, GUTENBERG)
        job = load_job_file(WORDCOUNT)
        first = InitMaster(node, cid, job=job, n_reducers=2, split_size=2**20)
        with trio.fail_after(60):
            root = await first.run()
        total = first.get_map_status().total
        record = await _provenance(node, root)
        mapped = sum(len(t["blocks"]) for t in record["tasks"] if t["kind"] == "split")
        assert first.task_counts() == {"executed": total + 2, "reused": 0, "resumed": 0,
                                       "blocks_mapped": mapped}

        again = InitMaster(node, cid, job=job, n_reducers=2, split_size=2**20)
        with trio.fail_after(60):
            assert await again.run() == root
        assert again.get_map_status().reused == total
        assert again.task_counts()["blocks_mapped"] == 0
        assert await _provenance(node, root) == record  # the same CID, the same record
        assert again.get_reduce_status().reused == 2
        assert "reused" in str(again.get_map_status())

        strict = InitMaster(node, cid, job=job, n_reducers=2, split_size=2**20, verify=2)
        with trio.fail_after(90):
            assert await strict.run() == root
        assert strict.task_counts()["reused"] == 0

        entries = sorted((node.repo / "memo").rglob("*.json"))
        assert entries
        for entry in entries[:3]:
            entry.write_text("{not json")
        damaged = InitMaster(node, cid, job=job, n_reducers=2, split_size=2**20)
        with trio.fail_after(60):
            assert await damaged.run() == root
        counts = damaged.task_counts()
        assert counts["executed"] >= 1 and counts["reused"] >= total + 2 - 3
        assert await output_counts(node, root) == reference_counts(sorted(GUTENBERG.iterdir()))


async def _provenance(node: Node, root: CID) -> dict[str, Any]:
    entries = {e.name: e.cid for e in await unixfs.list_directory(node.blocks, root)}
    record: dict[str, Any] = json.loads(
        await unixfs.read_range(node.blocks, entries["_provenance.json"]))
    return record


async def test_the_provenance_record_names_every_task_and_its_output() -> None:
    """The output links ``_provenance.json``: the job's code, input and
    parameters, and every task's inputs, output CIDs and memo key. Its map
    outputs are the reduces' inputs, its reduce outputs the part files, and
    its splits' blocks are the input's leaf blocks, each once, in order."""
    async with memory_swarm(peers=2) as swarm:
        node = swarm.master
        text = TEXTS[0]
        cid = await unixfs.add_path(node.blocks, text)
        master = InitMaster(node, cid, job=load_job_file(WORDCOUNT), n_reducers=3,
                            split_size=2**20)
        with trio.fail_after(60):
            root = await master.run()
        record = await _provenance(node, root)
        keys = [task["key"] for task in record["tasks"]]
        assert all((node.repo / "memo" / k[:2] / f"{k}.json").exists() for k in keys)
    assert master.facts is not None and master.job_cid is not None
    assert (record["p2pmr_provenance"], record["input"], record["code"], record["job"]) == \
        (1, str(cid), str(master.facts.code), str(master.job_cid))
    assert record["parameters"]["reducers"] == 3
    assert record["parameters"]["split_size"] == 2**20
    assert record["runtime"] == master.facts.runtime
    maps = [t for t in record["tasks"] if t["phase"] == "map"]
    reduces = [t for t in record["tasks"] if t["phase"] == "reduce"]
    assert [t["index"] for t in maps] == list(range(len(maps))) and len(reduces) == 3
    leaves = [str(seg.cid) for seg in await unixfs.file_segments(node.blocks, cid)]
    assert [b for t in maps if t["kind"] == "split" for b in t["blocks"]] == leaves
    parts = {e.name: str(e.cid) for e in await unixfs.list_directory(node.blocks, root)}
    for r, task in enumerate(reduces):
        partitions = [t["output"]["partitions"][r] for t in maps]
        assert task["inputs"] == [p for p in partitions if p]
        assert task["output"]["cid"] == parts[f"part-{r:05d}"]
    for task in record["tasks"]:
        payload = master.scheduler.phase_tasks(task["phase"])[task["index"]].payload
        assert task["key"] == memo_key(master.facts, payload)


def test_memo_keys_name_what_decides_the_output() -> None:
    """Keys change with every input of the task and every job fact, and with
    nothing else: a split's position in the plan (its file index) is not part
    of it, so the same split in a grown directory is found again."""
    a = CID.parse("QmQyrk2fd1HnndqLc87umSs15wdnRu9GjDa5p6UdLxLVWF")
    b = CID.parse("QmWbeMKD1mvv4JMP1HQjx1uBHd1ZjA33oeAHLFbise9HbL")
    facts = JobFacts(a, 2, "msgpack", 0, "cpython-3.11 cloudpickle-3.1.1")
    split = SplitInfo(0, 10, True, True, block=b, path="x/y.txt", file=0)
    key = memo_key(facts, split)
    assert key is not None and len(key) == 64
    assert memo_key(facts, SplitInfo(0, 10, True, True, block=b, path="x/y.txt", file=7)) \
        == key
    for other in (SplitInfo(0, 10, True, False, block=b, path="x/y.txt"),
                  SplitInfo(5, 10, True, True, block=b, path="x/y.txt"),
                  SplitInfo(0, 10, True, True, block=a, path="x/y.txt"),
                  SplitInfo(0, 10, True, True, block=b, path="x/z.txt")):
        assert memo_key(facts, other) != key
    for changed in (JobFacts(b, 2, "msgpack", 0, facts.runtime),
                    JobFacts(a, 3, "msgpack", 0, facts.runtime),
                    JobFacts(a, 2, "pickle", 0, facts.runtime),
                    JobFacts(a, 2, "msgpack", 1, facts.runtime),
                    JobFacts(a, 2, "msgpack", 0, "cpython-3.12 cloudpickle-3.1.1"),
                    JobFacts(a, 2, "msgpack", 0, facts.runtime, boundaries=b)):
        assert memo_key(changed, split) != key
    reduce = memo_key(facts, ReduceWork(0, [a, b]))
    assert reduce != memo_key(facts, ReduceWork(0, [b, a]))
    assert reduce == memo_key(facts, ReduceWork(1, [a, b]))  # the partition's index is not
    assert reduce == memo_key(JobFacts(a, 5, "msgpack", 0, facts.runtime), ReduceWork(0, [a, b]))
    assert json.dumps(key)  # plain text, fit for a file name
