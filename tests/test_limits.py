"""Running out of memory or CPU is reported as the limit it is, with the way
out, never as corrupt data or a peer's fault. Real `p2pmr run` processes
with local peers."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster, LimitExceeded, _worker
from p2pmr.job import dump_job, load_job_file
from p2pmr.node import Node
from p2pmr.records import encode_records
from p2pmr.storage.flatfs import FlatFS
from p2pmr.wire.codes import ErrorCode

from .helpers import GUTENBERG, ROOT, PeerProcess, run_cli

JOBS = Path(__file__).parent / "jobs"


def _text(path: Path, size: int) -> Path:
    """``size`` bytes of short lines of words: many records, little else."""
    words = (GUTENBERG / "pg-grimm.txt").read_text(encoding="utf-8").split()
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < size:
            line = " ".join(rng.choice(words) for _ in range(6)) + "\n"
            handle.write(line)
            written += len(line.encode())
    return path


def test_a_reduce_out_of_memory_names_the_limit_and_the_ways_out(tmp_path: Path) -> None:
    """A reduce that holds far more than it reads, in a worker limited to 400
    MiB. (The merge itself streams; what reduce keeps is its own.) It used to
    come back as "malformed map output" and get both healthy peers excluded,
    then fail 120 s later."""
    data = _text(tmp_path / "lines.txt", 8 * 1024 * 1024)
    result = run_cli("run", str(JOBS / "hoard.py"), "--input", str(data), "--reducers", "1",
                     "--local-peers", "2", "--max-task-memory", "400", "--repo",
                     str(tmp_path / "repo"), "--no-progress", check=False, timeout=240)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "reduce task 0 failed 3 times: LIMIT_EXCEEDED" in err
    assert "exceeded the worker memory limit of 400 MiB" in err
    for way_out in ("--max-task-memory", "--reducers", "combine function"):
        assert way_out in err
    assert "malformed" not in err and "excluding peer" not in err
    assert "Exception ignored" not in err


def test_a_huge_record_is_reported_as_the_limit(tmp_path: Path) -> None:
    """A 100 MiB line with no newline: one record larger than map can hold."""
    data = tmp_path / "one-line.txt"
    data.write_bytes(b"word " * (20 * 1024 * 1024))
    result = run_cli("run", str(ROOT / "examples" / "wordcount.py"), "--input", str(data),
                     "--local-peers", "2", "--max-task-memory", "400", "--repo",
                     str(tmp_path / "repo"), "--no-progress", check=False, timeout=240)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "LIMIT_EXCEEDED: map exceeded the worker memory limit of 400 MiB" in err
    assert "one of its records is 100.0 MiB" in err and "break the input into lines" in err
    assert "INTERNAL" not in err and "excluding peer" not in err


def test_run_passes_the_cpu_limit_to_its_local_peers(tmp_path: Path) -> None:
    result = run_cli("run", str(JOBS / "spin.py"), "--input", str(GUTENBERG / "pg-grimm.txt"),
                     "--local-peers", "1", "--max-task-cpu", "1", "--repo",
                     str(tmp_path / "repo"), "--no-progress", check=False, timeout=240)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "exceeded its CPU time limit of 1 s (the peer's --max-task-cpu)" in err


def test_task_limits_without_local_peers_are_refused(tmp_path: Path) -> None:
    result = run_cli("run", str(ROOT / "examples" / "wordcount.py"), "--input",
                     str(GUTENBERG), "--max-task-memory", "100", "--repo",
                     str(tmp_path / "repo"), check=False)
    assert result.returncode == 2 and b"set their own" in result.stderr


def test_a_full_disk_is_a_limit_that_names_the_fix(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot write its output because the peer's disk is full
    reports LIMIT_EXCEEDED with the path, not an internal error."""

    def full(self: FlatFS, cid: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.blocks))

    monkeypatch.setattr(FlatFS, "write", full)
    outcome = _worker.run_map(_worker.MapRequest(
        code_cid=b"c", code=dump_job(load_job_file(ROOT / "examples" / "wordcount.py")),
        encoding="msgpack", allow_pickle=False, reducers=1, cid_version=0,
        limits=_worker.WorkerLimits(cpu_seconds=None), store=str(tmp_path),
        records=encode_records([("f", 0, b"some words here", True)])))
    assert outcome.failure is not None and outcome.failure.code is ErrorCode.LIMIT_EXCEEDED
    assert "disk is full" in outcome.failure.message and str(tmp_path) in outcome.failure.message


@contextlib.contextmanager
def _memory_cgroup(limit: int) -> Iterator[Path]:
    """A memory cgroup of its own (v1 or v2) holding at most ``limit`` bytes,
    as a container gives a peer; removed afterwards."""
    entries = [entry.split(":", 2) for entry in
               Path("/proc/self/cgroup").read_text().splitlines()]
    v1 = [e for e in entries if "memory" in e[1].split(",")]
    path = (v1 or [e for e in entries if e[0] == "0"] or [["", "", ""]])[0][2]
    v2 = not v1
    base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
    group = base / path.lstrip("/") / f"p2pmr-test-{os.getpid()}"
    try:
        group.mkdir()
        if v2:
            (group / "memory.max").write_text(str(limit))
            (group / "memory.swap.max").write_text("0")
        else:
            (group / "memory.limit_in_bytes").write_text(str(limit))
            with contextlib.suppress(OSError):  # no swap accounting: no swap limit
                (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here ({exc}); this test needs root")
    try:
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


async def test_the_kernels_oom_killer_is_a_limit_too(master: Node, tmp_path: Path) -> None:
    """In a container the kernel may kill a worker before its own limit is
    reached: that is the memory limit too, not a worker that died for no
    reason (which would be retried 25 times)."""
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    with _memory_cgroup(400 * 1024 * 1024) as group:
        peer = await trio.to_thread.run_sync(lambda: PeerProcess(
            tmp_path / "peer", ["--bootstrap", master.multiaddrs[0], "--trust",
                                str(master.peer_id), "--workers", "1", "--max-task-memory", "0"],
            cgroup=group))
        try:
            job = InitMaster(master, cid, job=load_job_file(JOBS / "hog_memory.py"), n_reducers=1)
            with trio.fail_after(120), pytest.raises(LimitExceeded) as info:
                await job.run()
        finally:
            peer.kill()
    message = str(info.value)
    assert "failed 3 times: LIMIT_EXCEEDED" in message
    assert "out-of-memory killer" in message and "limit of 400 MiB" in message
