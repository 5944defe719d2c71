"""``p2pmr verify``: an output checked from its CID by running its tasks again.

Real ``p2pmr run`` and ``p2pmr verify`` processes with real local peers; the
tampered outputs are real directories in the same repo, built as an
attacker would build them: same layout, one claim changed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import trio

from p2pmr import InitMaster
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.flatfs import FlatFSStore

from .helpers import GUTENBERG, ROOT, forge_output, run_cli
from .swarm import Swarm

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TEXTS = sorted(GUTENBERG.glob("pg-*.txt"))


def _verify(repo: Path, output: str, *extra: str) -> tuple[int, str, dict[str, Any]]:
    """(exit status, text report, JSON verdict) of two verify runs."""
    text = run_cli("verify", output, "--repo", str(repo), *extra, check=False, timeout=180)
    assert text.returncode in (0, 1), text.stderr.decode()
    as_json = run_cli("verify", output, "--repo", str(repo), "--json", *extra, check=False,
                      timeout=180)
    return text.returncode, text.stdout.decode(), json.loads(as_json.stdout.decode())


def test_verify_accepts_an_honest_output_and_names_each_forgery(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for text in TEXTS[:3]:
        shutil.copy(text, data / text.name)
    repo = tmp_path / "repo"
    result = run_cli("run", str(WORDCOUNT), "--input", str(data), "--reducers", "2",
                     "--local-peers", "2", "--split-size", "1", "--repo", str(repo),
                     "--no-progress", timeout=180)
    output = result.stdout.decode().split()[-1]
    found = re.search(r"attestation (\S+)", result.stderr.decode())
    assert found, result.stderr.decode()
    attestation = found[1]

    status, report, verdict = _verify(repo, output, "--attestation", attestation)
    assert status == 0 and "every one matches" in report, report
    assert verdict["ok"] and verdict["checked"] == verdict["tasks"] > 3
    assert verdict["recomputed"] == output
    master_id = run_cli("id", "--repo", str(repo)).stdout.decode().split()[-1]
    assert verdict["attested_by"] == master_id and f"attested by master {master_id}" in report
    status, _, verdict = _verify(repo, output, "--sample", "2", "--seed", "7")
    assert status == 0 and verdict["checked"] == 2 and verdict["recomputed"] == output

    # A part file replaced: caught from the record alone, whatever is sampled.
    forged = forge_output(repo, output, "part")
    status, report, verdict = _verify(repo, forged, "--sample", "1", "--seed", "7")
    assert status == 1 and "reduce task 0" in report and "part-00000" in report, report
    assert any(m["phase"] == "reduce" and m["index"] == 0 for m in verdict["mismatches"])

    # A record that lies about a map task's output: running it names it,
    # and the peer that produced it (this repo holds the master's journal).
    lying = forge_output(repo, output, "record")
    status, report, verdict = _verify(repo, lying, "--all")
    assert status == 1, report
    wrong = [m for m in verdict["mismatches"] if m["cause"] == "output"]
    assert [(m["phase"], m["index"]) for m in wrong] == [("map", 0)], report
    assert wrong[0]["peer"] and "map task 0" in report and "produced by peer" in report

    # An attestation is checked: one about another output, or one changed
    # after it was signed, is refused before anything runs.
    other = run_cli("verify", lying, "--repo", str(repo), "--attestation", attestation,
                    check=False, timeout=120)
    assert other.returncode == 1 and b"is about" in other.stderr
    forged_attestation = _forge_attestation(repo, attestation)
    refused = run_cli("verify", output, "--repo", str(repo), "--attestation",
                      forged_attestation, check=False, timeout=120)
    assert refused.returncode == 1 and b"signature does not check out" in refused.stderr


def _forge_attestation(repo: Path, attestation: str) -> str:
    """The attestation with its producers changed and its signature kept."""

    async def forge() -> CID:
        store = FlatFSStore(repo)
        doc = json.loads(await unixfs.read_range(store, CID.parse(attestation)))
        doc["producers"] = {task: "12D3KooWBlame" for task in doc["producers"]}
        return await unixfs.add_bytes(store, json.dumps(doc).encode())

    return str(trio.run(forge))


def test_verify_of_something_that_is_not_an_output_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    cid = run_cli("add", str(TEXTS[0]), "--repo", str(repo)).stdout.decode().split()[-1]
    result = run_cli("verify", cid, "--repo", str(repo), check=False, timeout=120)
    assert result.returncode == 1 and b"_provenance.json" in result.stderr
    bad = run_cli("verify", cid, "--repo", str(repo), "--sample", "0", check=False)
    assert bad.returncode == 2 and b"--sample" in bad.stderr


async def test_verify_finds_a_lying_peer_that_verify_1_let_through(master: Node,
                                                                 tmp_path: Path) -> None:
    """With ``--verify 1`` the master takes one peer's word: a liar's map
    outputs reach the result. ``p2pmr verify`` runs every task again and
    names the liar's tasks, and the liar."""
    cid = await master.add_path(TEXTS[0])
    swarm = Swarm(master, tmp_path / "peers")
    try:
        liar = await trio.to_thread.run_sync(lambda: swarm.start("liar", name="liar"))
        await trio.to_thread.run_sync(swarm.start)
        job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=2,
                         split_size=2**18)
        with trio.fail_after(180):
            root = await job.run()
    finally:
        swarm.close()
    lied = [t.index for t in job.scheduler.phase_tasks("map")
            if str(t.completed_by) == str(liar.peer_id)]
    assert lied, "the liar ran no map task"

    result = await trio.to_thread.run_sync(lambda: run_cli(
        "verify", str(root), "--repo", str(master.repo), "--json", check=False, timeout=180))
    assert result.returncode == 1, result.stderr.decode()
    verdict = json.loads(result.stdout)
    wrong = [m for m in verdict["mismatches"] if m["cause"] == "output"]
    assert sorted(m["index"] for m in wrong if m["phase"] == "map") == sorted(lied)
    assert {m["peer"] for m in wrong} == {str(liar.peer_id)}
