"""Processes and state around a run: signals, orphans, fast failures, the
journal and the output directory. Real `p2pmr run` processes throughout."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster
from p2pmr.job import load_job_file
from p2pmr.node import Node

from .conftest import peers
from .helpers import GUTENBERG, ROOT, run_cli

JOBS = Path(__file__).parent / "jobs"


def _marked(marker: str) -> list[int]:
    """Every live process whose environment carries ``marker``: the run, its
    local peers and their worker processes all inherit it."""
    needle = f"P2PMR_TEST_MARKER={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().split(")")[-1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.1)


class Run:
    """``p2pmr run`` with local peers, marked so that all its processes can be found."""

    def __init__(self, tmp_path: Path, *args: str, sleep: str = "1") -> None:
        self.marker = uuid.uuid4().hex
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        env = {**os.environ, "P2PMR_TEST_MARKER": self.marker, "TMPDIR": str(self.tmp),
               "P2PMR_MARKERS": str(self.markers), "P2PMR_JOBCOUNT_SLEEP": sleep}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pmr", "run", *args, "--repo", str(tmp_path / "repo"),
             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode()

    def leftovers(self) -> list[str]:
        return [p.name for p in self.tmp.iterdir()]


def _slow_run(tmp_path: Path) -> Run:
    run = Run(tmp_path, str(JOBS / "jobcount.py"), "--input", str(GUTENBERG), "--local-peers",
              "2", "--reducers", "2")
    # Under way: maps are running in the peers' workers.
    _until(lambda: any(run.markers.iterdir()), 120, "a map started")
    assert len(_marked(run.marker)) >= 5  # master, two peers, their workers
    return run


def test_sigterm_stops_run_and_its_local_peers_cleanly(tmp_path: Path) -> None:
    """kill, timeout, CI cancellation and docker stop all send SIGTERM."""
    run = _slow_run(tmp_path)
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish(30)
    assert code == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "--resume" in err
    # Nothing outlives it: every peer and worker had stopped when it exited.
    assert _marked(run.marker) == []
    assert run.leftovers() == []


def test_local_peers_never_outlive_a_killed_master(tmp_path: Path) -> None:
    run = _slow_run(tmp_path)
    run.proc.kill()  # SIGKILL: the master cleans up nothing
    run.finish(30)
    _until(lambda: _marked(run.marker) == [], 20, "the local peers stopped")
    _until(lambda: run.leftovers() == [], 10, "the local peers removed their repos")


def test_a_run_that_fails_at_once_leaves_nothing_behind(tmp_path: Path) -> None:
    """--resume on an empty repo fails while the local peers are still starting."""
    run = Run(tmp_path, "--resume", "--local-peers", "2")
    code, err = run.finish(60)
    assert code == 1 and "no unfinished job" in err
    assert err.strip().splitlines()[-1].startswith("error:")  # the last word is the error
    assert _marked(run.marker) == []  # so nothing can print after the shell's prompt
    assert run.leftovers() == []


async def test_a_journal_deleted_mid_run_is_written_again(master: Node, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    os.environ.update(P2PMR_MARKERS=str(tmp_path), P2PMR_JOBCOUNT_SLEEP="0.2")
    try:
        jobcount = load_job_file(JOBS / "jobcount.py")
    finally:
        del os.environ["P2PMR_MARKERS"], os.environ["P2PMR_JOBCOUNT_SLEEP"]
    cid = await master.add_path(GUTENBERG)
    job = InitMaster(master, cid, job=jobcount, n_reducers=2)

    async def delete_the_journal() -> None:
        while job.get_map_status().complete < 4:  # noqa: ASYNC110 (polling a status API)
            await trio.sleep(0.02)
        journal = master.repo / "jobs" / str(job.job_cid) / "journal"
        journal.unlink()

    caplog.set_level(logging.WARNING, logger="p2pmr.journal")
    async with peers(master, tmp_path / "peers", 2):
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(delete_the_journal)
                root = await job.run()
        records = [json.loads(line) for line in
                   (master.repo / "jobs" / str(job.job_cid) / "journal").read_text().splitlines()]
        tasks = job.get_map_status().total + job.get_reduce_status().total
        assert records[0]["t"] == "job" and records[-1] == {**records[-1], "t": "output",
                                                            "cid": str(root)}
        assert sum(r["t"] == "done" for r in records) == tasks
        assert "was deleted or replaced while the job ran" in caplog.text
        # And it is the journal a resumed run trusts: nothing runs again.
        again = InitMaster(master, cid, job=jobcount, n_reducers=2, resume=True)
        with trio.fail_after(60):
            assert await again.run() == root
        assert again.resumed_tasks == tasks


def test_output_replaces_an_earlier_output_and_refuses_anything_else(tmp_path: Path) -> None:
    wordcount = str(ROOT / "examples" / "wordcount.py")
    text = str(GUTENBERG / "pg-metamorphosis.txt")
    out = tmp_path / "out"
    common = ["--input", text, "--local-peers", "1", "--repo", str(tmp_path / "repo"),
              "--no-progress", "--output", str(out)]
    run_cli("run", wordcount, "--reducers", "3", *common, timeout=120)
    assert sorted(p.name for p in out.iterdir()) == \
        ["_manifest.json", "_provenance.json", "part-00000", "part-00001", "part-00002"]
    run_cli("run", wordcount, "--reducers", "2", *common, timeout=120)
    assert sorted(p.name for p in out.iterdir()) == [
        "_manifest.json", "_provenance.json", "part-00000", "part-00001"]  # no stale part-00002
    assert json.loads((out / "_manifest.json").read_text())["reducers"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    # The working directory cannot be swapped away: it is replaced in place.
    subprocess.run([sys.executable, "-m", "p2pmr", "run", wordcount, "--reducers", "1",
                    *common[:-1], "."], cwd=out, check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "_provenance.json",
                                                     "part-00000"]
    assert json.loads((out / "_manifest.json").read_text())["reducers"] == 1
    # A directory holding anything else is refused before the job runs…
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    mine = [*common[:-1], str(other)]
    refused = run_cli("run", wordcount, *mine, check=False)
    assert refused.returncode == 2 and b"--overwrite" in refused.stderr
    assert b"finished" not in refused.stderr
    assert (other / "thesis.tex").exists()
    # …unless told to overwrite it.
    run_cli("run", wordcount, *mine, "--overwrite", timeout=120)
    assert sorted(p.name for p in other.iterdir()) == ["_manifest.json", "_provenance.json",
                                                       "part-00000"]
