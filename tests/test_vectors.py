"""Golden vectors: the bytes of frames, partitions and outputs, pinned.

Every format that decides a CID, and every frame on the wire, is written
down in ``protocols/vectors/`` (the spec points there). These tests rebuild
each one and compare byte for byte, so a change to any of them is seen, and
made on purpose: run ``P2PMR_WRITE_VECTORS=1 pytest tests/test_vectors.py``
to write them anew, and say why in the spec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from p2pmr.encoding import MSGPACK, group_pairs, partition_of
from p2pmr.job import load_job_file
from p2pmr.master import InitMaster
from p2pmr.master.plan import cut_runs
from p2pmr.records import encode_records
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.unixfs import Segment
from p2pmr.testing import memory_swarm
from p2pmr.wire._pb import mapreduce_pb2 as pb
from p2pmr.wire.codes import ErrorCode
from p2pmr.wire.messages import (
    Accepted,
    Assignment,
    Block,
    Cancel,
    Error,
    Fragment,
    JobSpec,
    MapResult,
    MapTask,
    Message,
    Phase,
    Progress,
    ReduceResult,
    ReduceTask,
    Split,
    TaskId,
    TaskTimings,
    decode,
    encode,
)

from .helpers import ROOT

VECTORS = ROOT / "protocols" / "vectors"
WRITE = bool(os.environ.get("P2PMR_WRITE_VECTORS"))


def _check(name: str, actual: Any) -> None:
    path = VECTORS / f"{name}.json"
    text = json.dumps(actual, indent=2, sort_keys=True) + "\n"
    if WRITE:
        VECTORS.mkdir(exist_ok=True)
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text), \
        f"{path.name} no longer matches: a format changed (see the module docstring)"


def _frames() -> dict[str, Message]:
    job, code = CID.hash(b"job descriptor"), CID.hash(b"job code")
    block, part = CID.hash(b"a leaf block"), CID.hash(b"a partition")
    peer_id = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    from libp2p.peer.id import ID

    map_id = TaskId(job, Phase.MAP, 3, 1)
    reduce_id = TaskId(job, Phase.REDUCE, 0, 0)
    return {
        "assignment": Assignment(
            JobSpec(job, code, 2, "msgpack", 0, "cpython-3.11 cloudpickle-3.1.3"), 500,
            (ID.from_base58(peer_id),),
            (MapTask(map_id, split=Split(block, "books/a.txt", 262144, 262144, False, True)),
             MapTask(TaskId(job, Phase.MAP, 4), records=CID.hash(b"records file")))),
        "assignment-run": Assignment(
            JobSpec(job, code, 2), 0, (),
            (MapTask(TaskId(job, Phase.MAP, 0), split=Split(
                block, "", 0, 262144 + 100, True, False, (CID.hash(b"next leaf"),),
                (262144, 100))),)),
        "assignment-reduce": Assignment(
            JobSpec(job, code, 2), 0, (),
            reduces=(ReduceTask(reduce_id, 0, (part, CID.hash(b"another"))),)),
        "accepted": Accepted(2),
        "progress": Progress(1234, (3, 4)),
        "map-result": MapResult(
            map_id, (part, None), (10, 0), Fragment(5, b"ends\n"), Fragment(300000), False,
            11, 10, TaskTimings(1, 2, 3, 4), (Block(part, b"partition bytes"),)),
        "reduce-result": ReduceResult(reduce_id, CID.hash(b"part file"), 10, 7, 7, 70,
                                      TaskTimings(5, 0, 9, 1)),
        "error": Error(ErrorCode.USER_CODE_ERROR, "map raised ValueError: no",
                       'Traceback (most recent call last):\n  File "job.py", line 3\n', map_id),
        "refusal": Error(ErrorCode.NOT_AUTHORISED, "not a trusted master of this peer"),
        "cancel": Cancel("another attempt finished first", map_id),
        "cancel-all": Cancel("the job is over"),
    }


def test_frames() -> None:
    frames = _frames()
    actual = {name: encode(message).hex() for name, message in frames.items()}
    _check("frames", actual)
    for name, message in frames.items():
        assert decode(bytes.fromhex(actual[name])) == message, name


def test_error_codes_match_the_schema() -> None:
    assert {code.name: int(code) for code in ErrorCode} == dict(pb.ErrorCode.items())


PAIRS: list[tuple[Any, Any]] = [
    ("the", 1), ("a", 2), ("the", 3), (("books/a.txt", 0), "a line"), (2**70, None),
    (1.5, [1, 2]), (-3, {"k": (1, "x")}), (b"\x00bytes", True), ("café", "ünïcode"),
]


def test_partitions() -> None:
    partitions, records_in, records_out = group_pairs(PAIRS, MSGPACK, 3)
    actual: dict[str, Any] = {"records_in": records_in, "records_out": records_out,
                              "partitions": [], "reducer_of": {}}
    for groups in partitions:
        data = MSGPACK.encode_partition(groups) if groups else b""
        cid, _ = unixfs.import_bytes(data) if data else (None, [])
        actual["partitions"].append({"hex": data.hex(), "cid": str(cid) if cid else None})
    for key, _ in PAIRS:
        kb = MSGPACK.dumps(key)
        actual["reducer_of"][kb.hex()] = partition_of(kb, 3)
    _check("partitions", actual)


def test_records_file() -> None:
    data = encode_records([("books/a.txt", 262140, b"a line across", True),
                           ("b.txt", 0, b"last\r", False)])
    _check("records-file", {"hex": data.hex(), "cid": str(unixfs.import_bytes(data)[0])})


TEXT = "The cat sat.\r\nThe dog, too!\n\nÉté naïf 42 the END\nno newline at the end"


@pytest.mark.parametrize("cid_version", [0, 1])
async def test_output_of_a_job(tmp_path: Path, cid_version: int) -> None:
    """Word count of a small text on two reducers: the part files' bytes and
    CIDs depend on nothing but the records (the directory CID also names the
    job's code, which depends on the Python that pickled it)."""
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with memory_swarm(peers=1) as swarm:
        # 16-byte blocks in runs of a few, so lines cross block edges inside
        # runs and between them, and boundary tasks run.
        options = unixfs.ImportOptions(chunk_size=16, cid_version=cid_version)
        cid = await unixfs.add_bytes(swarm.master.blocks, TEXT.encode(), options)
        root = await InitMaster(swarm.master, cid, job=wordcount, n_reducers=2,
                                cid_version=cid_version, split_size=40).run()
        parts = {}
        for entry in await unixfs.list_directory(swarm.master.blocks, root):
            if entry.name.startswith("part-"):
                data = await unixfs.read_range(swarm.master.blocks, entry.cid)
                parts[entry.name] = {"cid": str(entry.cid), "text": data.decode()}
    _check(f"output-cidv{cid_version}", {"input": str(cid), "parts": parts})


def test_splits() -> None:
    """Where runs of leaf blocks end (section 5), for a few targets."""
    blocks = [Segment(CID.hash(i.to_bytes(4, "big")), i * 262144, 262144) for i in range(48)]
    blocks[20] = Segment(blocks[20].cid, blocks[20].offset, 1000)  # a short block mid-file
    actual: dict[str, Any] = {"blocks": [[str(b.cid), b.size] for b in blocks], "runs": {}}
    for target in (0, 1 << 20, 4 << 20):
        actual["runs"][str(target)] = [len(run) for run in cut_runs(blocks, target)]
    _check("splits", actual)


def test_output_directory() -> None:
    """The directory layout: entries sorted by name, Kubo's dag-pb."""
    entries = [("part-00000", CID.hash(b"zero"), 12), ("part-00001", CID.hash(b"one"), 0),
               ("_manifest.json", CID.hash(b"manifest"), 345)]
    actual: dict[str, Any] = {}
    for version in (0, 1):
        root, block, size = unixfs.build_directory(entries, version)
        actual[f"cidv{version}"] = {"cid": str(root), "block": block.hex(), "size": size}
    _check("output-directory", actual)
