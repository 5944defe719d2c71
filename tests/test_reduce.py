"""Reduce in bounded memory: streamed inputs, merge passes, spills, lazy values.

Every output here is checked against a plain computation of the same thing
in memory (merge, sort, one import), so the streaming path must give the
very bytes, and CIDs, the in-memory one always gave.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

import p2pmr.testing
from p2pmr import InitMaster, _worker
from p2pmr.encoding import MSGPACK
from p2pmr.job import Job, dump_job, load_job_file
from p2pmr.storage import unixfs
from p2pmr.storage.unixfs import ImportOptions, import_bytes
from p2pmr.testing import memory_swarm
from p2pmr.wire.codes import ErrorCode

from .helpers import ROOT
from .swarm import output_lines

JOBS = Path(__file__).parent / "jobs"


def _partition(groups: dict[Any, list[Any]]) -> bytes:
    return MSGPACK.encode_partition(sorted((MSGPACK.dumps(k), v) for k, v in groups.items()))


def _random_runs(n: int, seed: int = 7) -> list[bytes]:
    """``n`` partitions over a few shared keys (of mixed types) and some of their own."""
    rng = random.Random(seed)
    keys: list[Any] = ["the", "a", ("t", 1), 3, 2.5, "é", b"raw"]
    runs = []
    for r in range(n):
        groups: dict[Any, list[Any]] = defaultdict(list)
        for i in range(rng.randint(0, 30)):
            key = rng.choice(keys) if rng.random() < 0.7 else f"own-{r}-{i % 5}"
            groups[key].append([r, i])
        runs.append(_partition(groups))
    return runs


def _expected_text(runs: list[bytes], reduce: Any) -> bytes:
    """What reduce's output must be: the spec's merge, order and sort, in memory."""
    merged: dict[bytes, list[Any]] = defaultdict(list)
    for data in runs:
        for kb, values in MSGPACK.decode_partition(data):
            merged[kb].extend(values)
    pairs = [pair for kb in sorted(merged) for pair in reduce(MSGPACK.loads(kb), iter(merged[kb]))]
    try:
        pairs.sort(key=lambda p: p[0])
    except TypeError:
        pairs.sort(key=lambda p: (type(p[0]).__name__, str(p[0])))
    return "".join(f"{k}\t{v}\n" for k, v in pairs).encode("utf-8", "surrogateescape")


def _request(job: Job, inputs: list[bytes], scratch: Path, **limits: Any
             ) -> _worker.ReduceRequest:
    return _worker.ReduceRequest(
        code_cid=repr(sorted(limits.items())).encode() + str(id(job)).encode(),
        code=dump_job(job), encoding="msgpack", allow_pickle=False, cid_version=0,
        limits=_worker.WorkerLimits(cpu_seconds=None, **limits), partition=0, inputs=inputs,
        spill_dir=str(scratch))


def _no_map(key: Any, value: Any) -> Any:
    yield key, value


def _job(reduce: Any) -> Job:
    return Job(map=_no_map, reduce=reduce)


def _in_order(key: Any, values: Any) -> Any:
    yield key, list(values)


@pytest.mark.parametrize("fan_in,memory", [(64, 1 << 27), (4, 2048), (2, 300)])
def test_merge_passes_and_spills_keep_the_order_of_values(tmp_path: Path, fan_in: int,
                                                           memory: int) -> None:
    """150 runs, merged 4 (or 2) at a time through several passes, with the
    output sorted on disk in tiny chunks: the same bytes as one merge in memory,
    every key's values in the order of the runs."""
    runs = _random_runs(150)
    scratch = tmp_path / "scratch"
    out = _worker.run_reduce(_request(_job(_in_order), runs, scratch,
                                      reduce_fan_in=fan_in, reduce_memory=memory))
    assert out.failure is None, out.failure
    text = _expected_text(runs, _in_order)
    assert out.cid == bytes(import_bytes(text)[0]) and out.size == len(text)
    assert out.records_in == sum(len(v) for data in runs
                                 for _, v in MSGPACK.decode_partition(data))
    assert list(scratch.iterdir()) == []  # every spill file is gone


def _peek_first(key: Any, values: Any) -> Any:
    if isinstance(key, str) and key.startswith("own"):
        yield key, "skipped"  # never reads its values
    elif key == "the":
        yield key, next(values)
    else:
        yield key, sum(1 for _ in values)


def test_a_reduce_may_leave_values_unread(tmp_path: Path) -> None:
    runs = _random_runs(40, seed=3)
    out = _worker.run_reduce(_request(_job(_peek_first), runs, tmp_path,
                                      reduce_fan_in=3))
    assert out.failure is None, out.failure
    assert out.cid == bytes(import_bytes(_expected_text(runs, _peek_first))[0])


_GOOD = _partition({"a": [1], "b": [2]})


@pytest.mark.parametrize("data", [
    MSGPACK.encode_partition([(MSGPACK.dumps("b"), [1]), (MSGPACK.dumps("a"), [2])]),
    MSGPACK.encode_partition([(MSGPACK.dumps("a"), [1]), (MSGPACK.dumps("a"), [2])]),
    msgpack.packb({"a": 1}),
    msgpack.packb([[b"\xa1a", 1]]),
    msgpack.packb([[b"\xa1a", [1], 3]]),
    msgpack.packb([["a", [1]]]),
    _GOOD[:-1],
    _GOOD + b"\x01",
    b"",
], ids=["out-of-order", "repeated-key", "a-map", "values-not-a-list", "three-items",
        "str-key", "truncated", "trailing-data", "empty"])
def test_a_malformed_partition_is_a_bad_request(tmp_path: Path, data: bytes) -> None:
    """Checked as it streams, with the error decode_partition always gave."""
    runs = [_GOOD, data, *_random_runs(6)]
    out = _worker.run_reduce(_request(_job(_in_order), runs, tmp_path,
                                      reduce_fan_in=2))
    assert out.failure is not None and out.failure.code is ErrorCode.BAD_REQUEST
    assert out.failure.message.startswith("malformed map output"), out.failure.message
    assert list(tmp_path.iterdir()) == []


def _fails_late(key: Any, values: Any) -> Any:
    if key == "own-39-0":
        raise RuntimeError("no")
    yield key, list(values)


def test_spills_are_removed_when_reduce_fails(tmp_path: Path) -> None:
    out = _worker.run_reduce(_request(_job(_fails_late), _random_runs(40), tmp_path,
                                      reduce_fan_in=2, reduce_memory=1))
    assert out.failure is not None and out.failure.code is ErrorCode.USER_CODE_ERROR
    assert list(tmp_path.iterdir()) == []


_WORKER = """
import json, sys
from p2pmr import _worker
from p2pmr.job import dump_job, load_job_file
args = json.loads(sys.argv[1])
limits = _worker.WorkerLimits(memory_bytes=args["memory"], cpu_seconds=None,
                              reduce_memory=args["budget"])
_worker.init_worker(limits)
out = _worker.run_reduce(_worker.ReduceRequest(
    code_cid=b"hot", code=dump_job(load_job_file(args["job"])), encoding="msgpack",
    allow_pickle=False, cid_version=0, limits=limits, partition=0, inputs=[],
    input_files=args["files"], spill_dir=args["scratch"]))
# This process's own peak: ru_maxrss would count the parent's, copied at fork.
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"failure": out.failure and out.failure.message, "cid": out.cid.hex(),
                  "records_in": out.records_in, "keys": out.keys, "blocks": out.output.blocks,
                  "maxrss": peak},
                 default=lambda b: b.hex()))
"""


def test_a_hot_key_streams_through_a_small_worker(tmp_path: Path) -> None:
    """5 million values of one key over 400 inputs, in a worker process whose
    address space is 200 MiB: holding them (as reduce used to, merged in one
    list, after decoding every input whole) needs far more than that. Values
    reach reduce one at a time and only the count and sum are kept; at most
    one pair per open input (64 of them) is in memory."""
    per_run, runs = 12_500, 400
    files = []
    for r in range(runs):
        values = list(range(r * per_run + 1000, (r + 1) * per_run + 1000))
        groups: dict[Any, list[Any]] = {"hot": values, f"k{r}": [r], "peek": [r, r]}
        path = tmp_path / f"input-{r}"
        path.write_bytes(_partition(groups))
        files.append(str(path))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = {"memory": 200 * 2**20, "budget": 2**20, "job": str(JOBS / "hot_key.py"),
            "files": files, "scratch": str(scratch)}
    result = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(args)], cwd=ROOT,
                            capture_output=True, timeout=120, check=True)
    got = json.loads(result.stdout)
    assert got["failure"] is None, got["failure"]
    n = per_run * runs
    assert got["records_in"] == n + runs + 2 * runs and got["keys"] == runs + 2
    text = b"".join(sorted(f"k{r}\t(1, {r})\n".encode() for r in range(runs)))
    text = b"hot\t(%d, %d)\n" % (n, sum(range(1000, n + 1000))) + text + b"peek\t0\n"
    assert got["cid"] == bytes(import_bytes(text)[0]).hex()
    assert got["maxrss"] < 128 * 2**20, got["maxrss"] / 2**20  # the values were never held
    assert list(scratch.iterdir()) == []


def _first_words(lines: list[str]) -> dict[str, list[int]]:
    """in_order.py's output, computed here: offsets under each line's first word.

    In the file's order; the job sees lines cut by block edges after the
    others (boundary tasks come last), so only the sets are compared.
    """
    offsets: dict[str, list[int]] = defaultdict(list)
    offset = 0
    for line in lines:
        words = line.split()
        offsets[words[0] if words else ""].append(offset)
        offset += len(line.encode()) + 1
    return offsets


async def test_spilling_in_a_swarm_gives_the_same_output_cid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job of ~140 map tasks (``split_size=0``: one per 1 KiB leaf) on peers without a local
    store (their inputs are spooled to files): reduced with a tiny memory
    budget and fan-in 3, its output CID is the one a reduce that merges every
    input at once in memory gives."""
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta", "eps", ""]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 3))) for _ in range(12000)]
    data = ("\n".join(lines) + "\n").encode()
    job = load_job_file(JOBS / "in_order.py")
    roots = []
    for limits in ({"reduce_fan_in": 1000}, {"reduce_memory": 4096, "reduce_fan_in": 3}):
        monkeypatch.setattr(p2pmr.testing, "WorkerLimits",
                            functools.partial(_worker.WorkerLimits, **limits))
        async with memory_swarm(peers=2) as swarm:
            cid = await unixfs.add_bytes(swarm.master.blocks, data, ImportOptions(chunk_size=1024))
            with trio.fail_after(120):
                roots.append(await InitMaster(swarm.master, cid, job=job, n_reducers=2,
                                              split_size=0).run())
            got = dict(line.split("\t") for line in await output_lines(swarm.master, roots[-1]))
        assert {k: sorted(ast.literal_eval(v)) for k, v in got.items()} == _first_words(lines)
    assert roots[0] == roots[1]
