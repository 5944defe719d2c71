"""``p2pmr repo gc``: what nothing needs goes; pins, unfinished jobs and the
memo within its limits stay. Real ``p2pmr`` processes on a real repo."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from p2pmr.storage.flatfs import FlatFS
from p2pmr.storage.unixfs import import_bytes

from .helpers import GUTENBERG, ROOT, random_bytes, run_cli

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TEXTS = sorted(GUTENBERG.glob("pg-*.txt"))


def _blocks(repo: Path) -> set[str]:
    return {p.name for p in (repo / "blocks").glob("*/*.data")}


def _run(repo: Path, data: Path, *extra: str) -> tuple[str, str]:
    result = run_cli("run", str(WORDCOUNT), "--input", str(data), "--reducers", "2",
                     "--local-peers", "2", "--split-size", "1", "--repo", str(repo),
                     "--no-progress", *extra, timeout=180)
    return result.stdout.decode().split()[-1], result.stderr.decode()


def test_gc_keeps_pins_unfinished_jobs_and_the_memo_and_removes_the_rest(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for text in TEXTS[:2]:
        shutil.copy(text, data / text.name)
    repo = tmp_path / "repo"
    output, _ = _run(repo, data)
    # Garbage: blocks nothing names (a fetched copy, an old intermediate).
    junk = import_bytes(random_bytes(600_000, seed=1))[1]
    store = FlatFS(repo)
    for cid, block in junk:
        store.write(cid, block)
    junk_names = {store.path_of(cid).name for cid, _ in junk}
    added = run_cli("add", str(TEXTS[3]), "--repo", str(repo)).stdout.decode().split()[-1]
    before = _blocks(repo)
    assert junk_names <= before

    dry = run_cli("repo", "gc", "--dry-run", "--repo", str(repo))
    assert _blocks(repo) == before and b"would remove" in dry.stdout
    run_cli("repo", "gc", "--repo", str(repo))
    after = _blocks(repo)
    assert not junk_names & after and after < before
    # A second collection has nothing left to remove.
    assert b"removed 0 block" in run_cli("repo", "gc", "--repo", str(repo)).stdout
    # The output, the input and an added file still read whole; the memo
    # still serves a rerun, which runs nothing.
    assert run_cli("cat", output, "--repo", str(repo)).stdout
    assert run_cli("cat", added, "--repo", str(repo)).stdout == TEXTS[3].read_bytes()
    again, stderr = _run(repo, data)
    assert again == output and "tasks: 0 run," in stderr

    # Memo entries beyond the age limit go, with the outputs kept for them
    # alone: the next run runs everything, and gives the same output.
    run_cli("repo", "gc", "--memo-max-age", "0", "--repo", str(repo))
    assert not list((repo / "memo").glob("*/*.json"))
    fresh, stderr = _run(repo, data)
    assert fresh == output and re.search(r"tasks: [1-9]\d* run, 0 reused", stderr)


def test_gc_keeps_what_an_unfinished_job_needs_and_refuses_a_repo_in_use(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    output, _ = _run(repo, TEXTS[0])
    job = json.loads(next((repo / "jobs").glob("*/report.json")).read_text())["job"]
    journal = repo / "jobs" / job / "journal"
    # The job, as if interrupted before its output: its journal says so.
    lines = [line for line in journal.read_text().splitlines()
             if json.loads(line).get("t") != "output"]
    journal.write_text("\n".join(lines) + "\n")
    for pin in (repo / "pins").iterdir():
        pin.unlink()  # nothing pinned: only the journal keeps anything
    result = run_cli("repo", "gc", "--memo-max-age", "0", "--repo", str(repo))
    assert b"1 unfinished job" in result.stdout
    resumed = run_cli("run", "--resume", "--local-peers", "2", "--repo", str(repo),
                      "--no-progress", timeout=180)
    assert resumed.stdout.decode().split()[-1] == output

    lock = os.open(repo / "repo.lock", os.O_RDWR)
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = run_cli("repo", "gc", "--repo", str(repo), check=False)
        assert busy.returncode == 1 and b"in use" in busy.stderr
    finally:
        os.close(lock)
