"""Seeing a job: `p2pmr status`, the status API, and the event log.

Real `p2pmr run` processes with real local peers, read from another
process through the repo's socket and files; and an in-process master
whose `/api/status` is compared with its own status API as it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from p2pmr import InitMaster
from p2pmr.dashboard.serve import serving
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.status import LiveStatus

from .helpers import copy_into, gutenberg_files, run_cli
from .swarm import Swarm, output_counts, reference_counts, run_while

JOBS = Path(__file__).parent / "jobs"
PACED = JOBS / "paced_words.py"


def start_run(repo: Path, data: Path, *extra: str, pace: float = 0.4) -> subprocess.Popen[str]:
    """`p2pmr run` of the paced word count on two local peers, one task per block."""
    return subprocess.Popen(
        [sys.executable, "-m", "p2pmr", "run", "--repo", str(repo), str(PACED), "--input",
         str(data), "--split-size", "0", "-R", "2", "--local-peers", "2", "--no-progress",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "P2PMR_TEST_PACE": str(pace)}, start_new_session=True)


def status_json(repo: Path, *args: str) -> dict[str, Any]:
    doc = json.loads(run_cli("status", "--repo", str(repo), "--json", *args, timeout=60).stdout)
    assert isinstance(doc, dict)
    return doc


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def check_counts(doc: dict[str, Any]) -> None:
    for phase in ("map", "reduce"):
        counts = doc[phase]
        assert set(counts) >= {"complete", "total", "in_progress", "failed", "idle", "reused"}
        assert all(type(v) is int for v in counts.values()), counts
        assert 0 <= counts["complete"] <= counts["total"]


def live_progress(repo: Path) -> dict[str, Any] | None:
    if not (repo / "master.json").exists():
        return None
    doc = status_json(repo)
    return doc if doc["live"] and doc["map"]["complete"] >= 2 else None


def test_status_of_a_running_then_finished_job(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = copy_into(tmp_path / "in", gutenberg_files()[:4])
    run = start_run(repo, data, "--events", str(tmp_path / "events.jsonl"))
    try:
        live = wait_for(lambda: live_progress(repo), 90, "the job to make progress")
        check_counts(live)
        assert live["state"] in ("map", "reduce", "assembling")
        assert live["job"] and live["input"] and live["reducers"] == 2
        assert live["map"]["total"] > live["map"]["complete"] or live["state"] != "map"
        assert len(live["peers"]) == 2
        assert all(p["online"] and not p["excluded"] for p in live["peers"])
        assert sum(p["completed"] for p in live["peers"]) >= live["map"]["complete"] - 1
        text = run_cli("status", "--repo", str(repo), timeout=60).stdout.decode()
        assert f"job {live['job']}" in text and "map " in text and "peers" in text
        # --watch follows the job to its end, then returns by itself.
        watched = run_cli("status", "--repo", str(repo), "--json", "--watch",
                          "--interval", "0.3", timeout=120).stdout.decode().splitlines()
        docs = [json.loads(line) for line in watched]
        assert docs[-1]["state"] == "done"
        assert len(docs) >= 2 and docs[0]["map"]["complete"] < docs[-1]["map"]["complete"]
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    output = out.strip().splitlines()[-1]
    done = status_json(repo)
    check_counts(done)
    assert done["live"] is False and done["state"] == "done" and done["output"] == output
    assert done["map"]["complete"] == done["map"]["total"] == live["map"]["total"]
    assert done["reduce"]["complete"] == 2 and "resume" not in done
    assert sum(p["completed"] for p in done["peers"]) == done["tasks"]["executed"]
    assert not (repo / "master.json").exists() and not (repo / "master.sock").exists()
    # The event log names every task's assignment and completion.
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    completed = {(e["phase"], e["task"]) for e in events if e["kind"] == "completed"}
    assert len(completed) == done["map"]["total"] + 2
    assert events[-1]["kind"] == "job-done" and events[-1]["detail"]["output"] == output
    # The job is named by a prefix of its CID too; a wrong one is a clear error.
    assert status_json(repo, live["job"][:12])["job"] == live["job"]
    wrong = run_cli("status", "--repo", str(repo), "QmNoSuchJob", check=False)
    assert wrong.returncode == 1 and b"no job in" in wrong.stderr


def test_status_of_an_interrupted_job_says_how_to_resume(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = copy_into(tmp_path / "in", gutenberg_files()[:4])
    run = start_run(repo, data, pace=1.0)
    try:
        wait_for(lambda: live_progress(repo), 90, "the job to make progress")
        os.killpg(run.pid, signal.SIGKILL)  # the master and its local peers
        run.wait(30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    doc = status_json(repo)
    check_counts(doc)
    assert doc["live"] is False and doc["state"] == "interrupted" and doc["output"] is None
    journal = [json.loads(line) for line in
               (repo / "jobs" / doc["job"] / "journal").read_text().splitlines()]
    done_maps = sum(1 for r in journal if r["t"] == "done" and r["phase"] == "map")
    assert doc["map"]["complete"] == done_maps >= 2
    assert doc["map"]["total"] > doc["map"]["complete"]
    assert "--resume" in doc["resume"] and doc["input"] in doc["resume"]
    text = run_cli("status", "--repo", str(repo), timeout=60).stdout.decode()
    assert "interrupted" in text and "resume with: p2pmr run" in text
    # The command it gives resumes the job (given peers to run on).
    resumed = run_cli(*doc["resume"].split()[1:], "--local-peers", "2", "--no-progress",
                      timeout=180, env={"P2PMR_TEST_PACE": "0"})
    assert b"resumed from the journal" in resumed.stderr
    after = status_json(repo)
    assert after["state"] == "done" and after["map"]["complete"] == after["map"]["total"]


async def test_api_status_matches_the_master_as_it_runs(master: Node, swarm: Swarm,
                                                        tmp_path: Path) -> None:
    files = gutenberg_files()[:4]
    cid = await master.add_path(copy_into(tmp_path / "in", files))
    for _ in range(2):
        await trio.to_thread.run_sync(swarm.start)
    job = InitMaster(master, cid, job=load_job_file(PACED), n_reducers=2, split_size=0)
    seen: list[dict[str, Any]] = []

    async def poll() -> None:
        async with serving(LiveStatus(job, master.repo), master.repo,
                           dashboard="127.0.0.1:0") as served:
            assert served.dashboard is not None
            transport = httpx.AsyncHTTPTransport(uds=str(served.socket))
            async with httpx.AsyncClient(base_url=served.dashboard, timeout=10) as web, \
                    httpx.AsyncClient(transport=transport, base_url="http://master",
                                      timeout=10) as local:
                while True:
                    before = job.get_map_status()
                    doc = (await web.get("/api/status")).json()
                    after = job.get_map_status()
                    check_counts(doc)
                    assert doc["map"]["total"] == after.total or job.phase == "planning"
                    assert before.complete <= doc["map"]["complete"] <= after.complete
                    assert (await local.get("/api/status")).json()["job"] == doc["job"]
                    events = (await web.get("/api/events", params={"since": 0})).json()
                    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
                    bad = await web.get("/api/events", params={"since": "x"})
                    assert bad.status_code == 400
                    assert (await web.post("/api/status")).status_code == 405  # read-only
                    seen.append(doc)
                    await trio.sleep(0.3)

    root = await run_while(job, poll, 180)
    assert await output_counts(master, root) == reference_counts(files)
    progress = [d["map"]["complete"] for d in seen if d["job"]]
    assert len(set(progress)) >= 2, progress  # it was seen moving


async def test_the_event_log_tells_the_story_of_a_killed_peer(master: Node, swarm: Swarm,
                                                              tmp_path: Path) -> None:
    files = gutenberg_files()[:4]
    cid = await master.add_path(copy_into(tmp_path / "in", files))
    peers = [await trio.to_thread.run_sync(swarm.start) for _ in range(2)]
    job = InitMaster(master, cid, job=load_job_file(PACED), n_reducers=2, split_size=0)
    log_file = tmp_path / "events.jsonl"
    job.events.attach(log_file)
    victim = peers[0]

    async def kill_while_running() -> None:
        while not any(e.kind == "running" and e.peer == str(victim.peer_id)  # noqa: ASYNC110
                      for e in job.events.recent):
            await trio.sleep(0.05)
        await trio.to_thread.run_sync(victim.kill)

    root = await run_while(job, kill_while_running, 180)
    assert await output_counts(master, root) == reference_counts(files)
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    who = str(victim.peer_id)
    # Its peer died under a task: the attempt failed, the peer was lost, and
    # the task was assigned again, to another peer, which completed it.
    assert any(e["kind"] == "peer-lost" and e["peer"] == who for e in events)
    story = []
    for failure in (e for e in events if e["kind"] == "failed" and e["peer"] == who):
        task = (failure["phase"], failure["task"])
        of_task = [e for e in events if (e.get("phase"), e.get("task")) == task]
        first = next(e for e in of_task if e["kind"] == "assigned")
        assert first["peer"] == who and first["seq"] < failure["seq"]
        again = next(e for e in of_task if e["kind"] == "assigned" and e["seq"] > failure["seq"])
        done = next(e for e in of_task if e["kind"] == "completed")
        assert again["peer"] != who and done["peer"] == again["peer"]
        assert again["seq"] < done["seq"]
        story.append(task)
    assert story, "the killed peer held no task when it died"
    # The same story is in the job's own event log, in its repo.
    assert (master.repo / "jobs" / str(job.job_cid) / "events.jsonl").read_text() \
        .count('"peer-lost"') >= 1


async def test_min_peers_holds_the_job_until_the_swarm_is_there(master: Node, swarm: Swarm,
                                                                tmp_path: Path) -> None:
    files = gutenberg_files()[:2]
    cid = await master.add_path(copy_into(tmp_path / "in", files))
    await trio.to_thread.run_sync(swarm.start)
    job = InitMaster(master, cid, job=load_job_file(PACED), n_reducers=1, split_size=0,
                     min_peers=2)

    async def second_peer_later() -> None:
        await trio.sleep(3)
        await trio.to_thread.run_sync(swarm.start)

    root = await run_while(job, second_peer_later, 120)
    assert await output_counts(master, root) == reference_counts(files)
    events = list(job.events.recent)
    joined = [e for e in events if e.kind == "peer-joined"]
    first_task = next(e for e in events if e.kind == "assigned")
    assert len(joined) == 2 and first_task.seq > joined[1].seq
    assert {e.peer for e in events if e.kind == "completed"} == {e.peer for e in joined}
