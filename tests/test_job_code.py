"""Job code as it travels: pickled on the master, run on peers that have
none of its files. Tracebacks must still name the job file and show its
lines, and the code must not depend on where the file lies."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pmr import InitMaster, JobError, JobFailed, RemoteTaskError, job
from p2pmr.job import dump_job, load_job_file
from p2pmr.node import Node

from .conftest import peers
from .helpers import GUTENBERG, copy_into, gutenberg_files, run_cli
from .swarm import Swarm, output_counts, output_lines, reference_counts, until_workers

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


@pytest.mark.parametrize("name", ["setclass.py", "pickled_classes.py", "module_state.py"])
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
    print(_worker.user_traceback(exc))
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


async def test_module_level_state_that_cannot_be_pickled_runs_on_every_peer(
        master: Node, tmp_path: Path) -> None:
    """A system random source, a lock, an open file and a database connection,
    made by the job file's module-level code: each worker makes its own, and
    the counts are exact."""
    files = gutenberg_files()[:3]
    cid = await master.add_path(copy_into(tmp_path / "in", files))
    state = load_job_file(JOBS / "module_state.py")
    async with peers(master, tmp_path / "peers", 2):
        with trio.fail_after(120):
            root = await InitMaster(master, cid, job=state, n_reducers=3).run()
    assert await output_counts(master, root) == reference_counts(files)


def test_one_job_file_at_two_paths_is_one_code_and_one_output(tmp_path: Path) -> None:
    """`p2pmr run` with a local peer, from two copies of a job file whose module
    makes unpicklable state: one output CID (it names the code CID)."""
    outputs = []
    for where in ("a", "b/c"):
        copy = tmp_path / where / "module_state.py"
        copy.parent.mkdir(parents=True)
        shutil.copy(JOBS / "module_state.py", copy)
        result = run_cli("run", str(copy), "--input", str(GUTENBERG / "pg-metamorphosis.txt"),
                         "--reducers", "2", "--local-peers", "1", "--repo",
                         str(tmp_path / f"repo-{where.replace('/', '-')}"), "--no-progress",
                         timeout=300)
        outputs.append(result.stdout.decode().splitlines()[-1])
    assert outputs[0] == outputs[1]
    listing = run_cli("ls", outputs[0], "--repo", str(tmp_path / "repo-a")).stdout.decode()
    assert "part-00000" in listing


@pytest.mark.parametrize("mode", ["other-python", "other-cloudpickle"])
async def test_a_peer_with_another_runtime_refuses_and_the_others_finish(
        master: Node, swarm: Swarm, tmp_path: Path, mode: str) -> None:
    """A real peer process that has another Python (or cloudpickle major)
    refuses every assignment before running anything; the master excludes
    it with its reason and the job finishes, exact, on the others."""
    files = gutenberg_files()[:2]
    cid = await master.add_path(copy_into(tmp_path / "in", files))
    other = await trio.to_thread.run_sync(lambda: swarm.start(mode, name="other"))
    await trio.to_thread.run_sync(swarm.start)
    await until_workers(master, 2)
    job = InitMaster(master, cid, job=load_job_file(JOBS.parent.parent / "examples" /
                                                    "wordcount.py"), n_reducers=2)
    with trio.fail_after(120):
        root = await job.run()
    assert await output_counts(master, root) == reference_counts(files)
    record = job.get_peer_status()[other.peer_id]
    assert record.excluded and record.completed == 0
    need = "Python version" if mode == "other-python" else "major version of cloudpickle"
    assert "pickled for cpython-" in record.excluded_reason and need in \
        record.excluded_reason, record.excluded_reason


_LOCK = threading.Lock()


def _guarded_split(key: object, line: str) -> Iterator[tuple[str, int]]:
    with _LOCK:
        yield from ((word, 1) for word in line.split())


def _count(word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
    yield word, sum(counts)


async def test_a_global_that_cannot_be_pickled_is_named_with_its_function(
        master: Node) -> None:
    """A job passed as Python objects travels by value, globals and all: one
    that cannot is named, with the function that uses it and the way out."""
    cid = await master.add_bytes(b"one line\n")
    with pytest.raises(JobError) as info:
        await InitMaster(master, cid, _guarded_split, _count, 1).run()
    message = str(info.value)
    assert "'_LOCK'" in message and "_guarded_split()" in message, message
    assert "inside the function" in message and "p2pmr run" in message


def test_a_syntax_error_reads_like_pythons_own(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("def map(key, line):\n    yield line,, 1\n\ndef reduce(k, v):\n"
                   "    yield k, 1\n")
    with pytest.raises(JobError) as info:
        load_job_file(bad)
    message = str(info.value)
    assert f'File "{bad}", line 2' in message, message
    assert "    yield line,, 1\n" in message and re.search(r"\n +\^+\n", message), message
    assert "SyntaxError: invalid syntax" in message


def test_an_error_at_import_shows_the_job_files_lines(tmp_path: Path) -> None:
    """Through `p2pmr run`, which loads the job in a process of its own."""
    bad = tmp_path / "importfail.py"
    bad.write_text("import json\n\nSETTINGS = json.loads('{\"reducers\": }')\n\n"
                   "def map(key, line):\n    yield line, 1\n")
    text = tmp_path / "in.txt"
    text.write_text("a line\n")
    result = run_cli("run", str(bad), "--input", str(text), "--repo", str(tmp_path / "repo"),
                     "--no-progress", check=False, timeout=120)
    err = result.stderr.decode()
    assert result.returncode != 0
    assert f'File "{bad}", line 3, in <module>' in err, err
    assert "SETTINGS = json.loads(" in err and "JSONDecodeError" in err
    assert "p2pmr/" not in err.replace(str(bad), "")  # none of p2pmr's own frames


def test_a_job_files_module_is_imported_once_per_process_with_the_masters_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its module-level code runs once in a worker, however many times the
    code is loaded; a global it read from the master's environment keeps the
    master's value there."""
    source = tmp_path / "greet.py"
    source.write_text("import os, sys\n\nprint('imported', file=sys.stderr)\n"
                      "WORD = os.environ.get('P2PMR_TEST_WORD', 'unset')\n\n"
                      "def map(key, line):\n    yield WORD, 1\n\n"
                      "def reduce(key, values):\n    yield key, sum(values)\n")
    monkeypatch.setenv("P2PMR_TEST_WORD", "masters")
    code = dump_job(load_job_file(source))
    probe = """
import sys
from p2pmr import _worker
code = sys.stdin.buffer.read()
for cid in (b"a", b"b", b"a"):
    loaded = _worker._load_job(cid, code)
    _worker.show_sources(loaded)
    print(list(loaded.map(None, "x")))
"""
    monkeypatch.delenv("P2PMR_TEST_WORD")
    done = subprocess.run([sys.executable, "-c", probe], input=code, capture_output=True,
                          check=True, cwd=tmp_path)
    assert done.stderr.decode().count("imported") == 1, done.stderr
    assert done.stdout.decode().splitlines() == ["[('masters', 1)]"] * 3
