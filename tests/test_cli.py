"""The p2pmr command line, run as a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .helpers import GUTENBERG, ROOT, PeerProcess, random_bytes, run_cli

WORD = re.compile(r"[^\W\d_]+")


def test_add_flags_match_kubo(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(random_bytes(262145))
    repo = ["--repo", str(tmp_path / "repo")]
    assert run_cli("add", str(src), *repo).stdout.decode().splitlines()[-1] == \
        "QmdkAszdeWKht9nXSzPKGUYvUqpMfm325GuCn1pZnTa9ja"
    assert run_cli("add", str(src), "--cid-version", "1", *repo).stdout.decode().split()[-1] == \
        "bafybeidbbs6ocod3v27jtr4uhvc6n55y3gbrtur3bvjsnraudtbxkozi2y"
    # --raw-leaves with CIDv0, as js-ipfs (and Kubo) compute it.
    assert run_cli("add", str(src), "--raw-leaves", *repo).stdout.decode().split()[-1] == \
        "QmUsVXCwCee48bBpMsD9MzQLseTJyNj6q3RGDSATJQKosj"


def test_add_directory_cat_ls_and_block_get(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"hello\n")
    (tree / "sub" / "b.bin").write_bytes(random_bytes(1000))
    repo = ["--repo", str(tmp_path / "repo")]
    root = run_cli("add", "-r", str(tree), *repo).stdout.decode().split()[-1]
    assert root == "QmVS3kBMvZpYCW1QYhbrKgq7D3yBAciQJyMkuAVJbvDFQr"  # real Kubo 0.22's CID
    listing = run_cli("ls", root, *repo).stdout.decode().splitlines()
    assert [line.split()[-1] for line in listing] == ["a.txt", "sub/"]
    assert run_cli("cat", root, *repo).stdout == b"hello\n" + random_bytes(1000)
    a_cid = listing[0].split()[0]
    assert run_cli("block", "get", a_cid, *repo).stdout == bytes.fromhex("0a0c080212066865") + \
        b"llo\n\x18\x06"
    missing = run_cli("cat", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", *repo, check=False)
    assert missing.returncode == 1 and b"not found" in missing.stderr
    bad = run_cli("cat", "not-a-cid", *repo, check=False)
    assert bad.returncode == 2 and b"CID" in bad.stderr


def test_peer_identity_survives_restart_and_sigterm_is_clean(tmp_path: Path) -> None:
    repo = tmp_path / "peer"
    with PeerProcess(repo) as first:
        peer_id = first.peer_id
        assert first.addr.startswith("/ip4/127.0.0.1/tcp/") and first.addr.endswith(peer_id)
    assert first.proc.returncode == 0
    with PeerProcess(repo) as second:
        assert second.peer_id == peer_id
    assert second.proc.returncode == 0


def test_run_with_local_peers_output_and_cat(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    out = tmp_path / "out"
    result = run_cli("run", str(ROOT / "examples" / "wordcount.py"), "--input", str(GUTENBERG),
                     "--reducers", "3", "--local-peers", "2", "--repo", str(repo),
                     "--output", str(out), timeout=300)
    output_cid = result.stdout.decode().splitlines()[-1]
    assert output_cid.startswith("Qm")
    progress = [line for line in result.stderr.decode().splitlines()
                if line.startswith("progress: ")]
    # Nothing before the plan is known (no "map 0/0"), and the end is shown.
    assert progress and not progress[0].startswith("progress: map 0/0")
    final = re.fullmatch(r"progress: map (\d+)/(\d+)  reduce 3/3", progress[-1])
    assert final and final[1] == final[2] != "0", progress[-1]
    assert sorted(p.name for p in out.iterdir()) == \
        ["_manifest.json", "_provenance.json", "part-00000", "part-00001", "part-00002"]
    manifest = json.loads((out / "_manifest.json").read_text())
    # Every file is under the 4 MiB a split aims at: a split per file.
    assert manifest["reducers"] == 3 and manifest["counts"]["splits"] == 9
    expected: Counter[str] = Counter()
    for path in sorted(GUTENBERG.iterdir()):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            expected.update(WORD.findall(line))
    text = run_cli("cat", output_cid, "--repo", str(repo)).stdout.decode()
    got = {w: int(c) for w, c in (line.split("\t") for line in text.splitlines())}
    assert got == dict(expected)
    # Parts print in order and each part is sorted by key.
    for part in sorted(out.glob("part-*")):
        keys = [line.split("\t")[0] for line in part.read_text().splitlines()]
        assert keys == sorted(keys)
    report = json.loads((repo / "jobs" / manifest["job"] / "report.json").read_text())
    assert report["output"] == output_cid and report["timings"]["total"] > 0
    # Local peers read the master's store in place: no block went out over Bitswap.
    assert report["traffic"]["blocks_out"] == 0


def test_run_reports_user_errors_with_traceback(tmp_path: Path) -> None:
    result = run_cli("run", str(Path(__file__).parent / "jobs" / "raises.py"), "--input",
                     str(GUTENBERG / "pg-frankenstein.txt"), "--local-peers", "1",
                     "--repo", str(tmp_path / "repo"), "--no-progress", check=False, timeout=300)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "error: map task" in err and "ValueError: refusing to map" in err
    assert "Remote traceback" in err


def test_worker_pool_is_sized_by_usable_cpus_not_host_cores() -> None:
    """A peer pinned to one CPU (as in a small container on a big host) starts
    one worker by default, not one per host core."""
    probe = ("import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "from p2pmr.peer import PeerConfig; print(PeerConfig().workers, os.cpu_count())")
    workers, host = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                   check=True, text=True).stdout.split()
    assert workers == "1", f"{workers} workers on one usable CPU (host has {host})"


def test_same_job_file_same_input_same_output_cid(tmp_path: Path) -> None:
    """Two runs of a job whose code holds a set and a class, in processes with
    different hash seeds and with fresh repos, give one output CID."""
    outputs = []
    for seed in ("1", "2"):
        result = run_cli("run", str(Path(__file__).parent / "jobs" / "setclass.py"), "--input",
                         str(GUTENBERG / "pg-metamorphosis.txt"), "--reducers", "2",
                         "--local-peers", "1", "--repo", str(tmp_path / f"repo-{seed}"),
                         "--no-progress", timeout=300, env={"PYTHONHASHSEED": seed})
        outputs.append(result.stdout.decode().splitlines()[-1])
    assert outputs[0] == outputs[1]


def test_fetching_gives_up_once_every_peer_says_it_has_nothing(tmp_path: Path) -> None:
    """cat, ls and block get with --bootstrap: a peer that says it does not
    have the block twice, asked a few seconds apart, ends the wait long before
    --timeout."""
    ghost = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    with PeerProcess(tmp_path / "peer") as peer:
        for command in (["cat", ghost], ["ls", ghost], ["block", "get", ghost]):
            started = time.monotonic()
            result = run_cli(*command, "--repo", str(tmp_path / "repo"), "--bootstrap",
                             peer.addr, "--timeout", "60", check=False)
            elapsed = time.monotonic() - started
            assert result.returncode == 1
            assert b"none of the 1 peer(s) asked has it" in result.stderr
            assert elapsed < 20, f"{command[0]} took {elapsed:.0f}s"
