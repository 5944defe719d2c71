"""Job code as it travels: pickled on the master, run on peers that have
none of its files. Tracebacks must still name the job file and show its
lines, and the code must not depend on where the file lies."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pmr import InitMaster, JobFailed, RemoteTaskError, job
from p2pmr.job import dump_job, load_job_file
from p2pmr.node import Node

from .conftest import peers
from .helpers import GUTENBERG
from .swarm import output_lines

JOBS = Path(__file__).parent / "jobs"
WORD = re.compile(r"[^\W\d_]+")


async def test_remote_traceback_names_the_job_file_and_shows_its_lines(master: Node,
                                                                      tmp_path: Path) -> None:
    """The job file is gone by the time the peer runs it: the lines shown come
    with the code, not from any file on the peer."""
    copy = tmp_path / "jobdir" / "raises.py"
    copy.parent.mkdir()
    shutil.copy(JOBS / "raises.py", copy)
    raises = load_job_file(copy)
    copy.unlink()
    cid = await master.add_path(GUTENBERG / "pg-frankenstein.txt")
    async with peers(master, tmp_path / "peers", 1):
        with trio.fail_after(60), pytest.raises(JobFailed) as info:
            await InitMaster(master, cid, job=raises, n_reducers=1).run()
    message = str(info.value)
    assert isinstance(info.value, RemoteTaskError)
    assert 'File "raises.py", line 6, in map' in info.value.remote_traceback
    assert 'File "raises.py", line 6, in map' in message
    assert '    raise ValueError(f"refusing to map {line!r}")' in message
    assert "<dynamic-code>" not in message
    assert "_worker.py" not in message  # p2pmr's own frames say nothing to the user


def _dump_elsewhere(path: Path) -> bytes:
    """The job file's code, pickled in a process of its own."""
    probe = (f"import sys; from p2pmr.job import dump_job, load_job_file; "
             f"sys.stdout.buffer.write(dump_job(load_job_file({str(path)!r})))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True,
                          env={"PYTHONHASHSEED": "0", "PATH": ""}).stdout


@pytest.mark.parametrize("name", ["setclass.py", "pickled_classes.py"])
def test_code_does_not_depend_on_where_the_job_file_lies(tmp_path: Path, name: str) -> None:
    """Nor on which process pickles it: classes are tagged after their code."""
    codes = []
    for where in ("a", "b/c"):
        target = tmp_path / where / name
        target.parent.mkdir(parents=True)
        shutil.copy(JOBS / name, target)
        codes.append(_dump_elsewhere(target))
    assert codes[0] == codes[1]
    assert str(tmp_path).encode() not in codes[0]  # no machine path travels


def test_one_worker_carries_the_classes_of_two_versions_of_a_job(tmp_path: Path) -> None:
    """A peer's worker lives across runs; a job file edited between two runs
    defines a class of the same name anew. Under the pickle encoding, each
    run's records must pickle with that run's class."""
    from p2pmr import _worker
    from p2pmr.records import encode_records

    codes = []
    for version in ("1", "2"):
        target = tmp_path / version / "pickled_classes.py"
        target.parent.mkdir()
        target.write_text((JOBS / "pickled_classes.py").read_text() + f"\nVERSION = {version}\n")
        codes.append(_dump_elsewhere(target))
    assert codes[0] != codes[1]
    for code in (codes[0], codes[1], codes[0]):
        outcome = _worker.run_map(_worker.MapRequest(
            code_cid=hashlib.sha256(code).digest(), code=code, encoding="pickle",
            allow_pickle=True, reducers=2, cid_version=0,
            limits=_worker.WorkerLimits(cpu_seconds=None),
            records=encode_records([("f", 0, b"Hans and Gretel", True)])))
        assert outcome.failure is None, outcome.failure


def _rewriting(filename: str | None) -> Callable[[types.CodeType], Any]:
    """cloudpickle's code reduction, but rewriting co_filename as some release does."""
    original = job._CODE_REDUCE
    assert original is not None

    def reduce(code: types.CodeType) -> Any:
        return original(code.replace(co_filename=filename) if filename else code)

    return reduce


@pytest.mark.parametrize("behaviour", [None, "<dynamic-code>"], ids=["keeps", "rewrites"])
def test_file_names_and_sources_survive_any_cloudpickle(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path,
                                                       behaviour: str | None) -> None:
    """cloudpickle 3.0 keeps co_filename, 3.1.3 rewrites it to "<dynamic-code>":
    with either, the code a peer loads names the job file, and its lines show."""
    monkeypatch.setattr(job, "_CODE_REDUCE", _rewriting(behaviour))
    code = dump_job(load_job_file(JOBS / "raises.py"))
    probe = """
import sys, traceback
from p2pmr import _worker
loaded = _worker._load_job(b"cid", sys.stdin.buffer.read())
_worker.show_sources(loaded)
try:
    list(loaded.map(("f", 0), "Frankenstein"))
except ValueError as exc:
    print(_worker._remote_traceback(exc))
"""
    out = subprocess.run([sys.executable, "-c", probe], input=code, capture_output=True,
                         check=True, cwd=tmp_path).stdout.decode()
    assert 'File "raises.py", line 6, in map' in out
    assert 'raise ValueError(f"refusing to map {line!r}")' in out


def _reference(paths: list[Path]) -> list[str]:
    tallies: dict[str, list[int]] = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            for line in handle:
                for word in WORD.findall(line):
                    tally = tallies.setdefault(word[0].lower(), [0, 0])
                    tally[0] += 1
                    tally[1] += len(word)
    return sorted(f"{k}\t{w} {n}" for k, (w, n) in tallies.items())


async def test_pickle_encoding_carries_the_job_files_own_classes(master: Node,
                                                                tmp_path: Path) -> None:
    cid = await master.add_path(GUTENBERG)
    classes = load_job_file(JOBS / "pickled_classes.py")
    async with peers(master, tmp_path / "peers", 2, extra=("--allow-pickle",)):
        with trio.fail_after(120):
            root = await InitMaster(master, cid, job=classes, n_reducers=3, encoding="pickle").run()
    assert sorted(await output_lines(master, root)) == _reference(sorted(GUTENBERG.iterdir()))
