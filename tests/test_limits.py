"""Running out of memory or CPU is reported as the limit it is, with the way
out, never as corrupt data or a peer's fault. Real `p2pmr run` processes
with local peers."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from p2pmr import _worker
from p2pmr.blockstore import FlatFS
from p2pmr.job import dump_job, load_job_file

from .helpers import GUTENBERG, ROOT, run_cli

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
    """One reducer must hold every record of 24 MiB of short lines, in a
    worker limited to 400 MiB. It used to come back as "malformed map output"
    and get both healthy peers excluded, then fail 120 s later."""
    data = _text(tmp_path / "lines.txt", 24 * 1024 * 1024)
    result = run_cli("run", str(JOBS / "records.py"), "--input", str(data), "--reducers", "1",
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
        records=_worker.encode_records([("f", 0, b"some words here", True)])))
    assert outcome.failure is not None and outcome.failure.code == _worker.LIMIT_EXCEEDED
    assert "disk is full" in outcome.failure.message and str(tmp_path) in outcome.failure.message
