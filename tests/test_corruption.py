"""A block that rots on disk: every read checks it, reports it with its CID
and path, sets it aside, and fetches an intact copy from peers that have one.
Real processes and real repos; the damage is one flipped bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster, JobFailed
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.flatfs import FlatFS

from .helpers import GUTENBERG, ROOT, PeerProcess, run_cli
from .swarm import Swarm, output_counts, reference_counts

WORDCOUNT = ROOT / "examples" / "wordcount.py"
TEXT = GUTENBERG / "pg-grimm.txt"  # two leaves under a root


def _leaves(path: Path) -> tuple[CID, list[CID]]:
    root, blocks = unixfs.import_bytes(path.read_bytes())
    return root, [cid for cid, _ in blocks if cid != root]


def _flip_a_bit(repo: Path, cid: CID) -> Path:
    path = FlatFS(repo).path_of(cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def test_cat_block_get_and_repo_verify_name_a_corrupt_block(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    root = run_cli("add", str(TEXT), "--repo", str(repo)).stdout.decode().split()[-1]
    _, leaves = _leaves(TEXT)
    bad = _flip_a_bit(repo, leaves[1])
    verify = run_cli("repo", "verify", "--repo", str(repo), check=False)
    assert verify.returncode == 1 and str(bad).encode() in verify.stdout
    for args in (["cat", root], ["block", "get", str(leaves[1])]):
        result = run_cli(*args, "--repo", str(repo), check=False)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert str(leaves[1]) in err and "is corrupt" in err and bad.name in err
        assert len(result.stdout) < TEXT.stat().st_size  # never the corrupt bytes as data
        # Set aside now: the next read says where it went.
        again = run_cli(*args, "--repo", str(repo), check=False)
        assert again.returncode == 1 and b"a corrupt copy of it was set aside" in again.stderr
        # Adding the file again writes an intact copy.
        run_cli("add", str(TEXT), "--repo", str(repo))
        assert run_cli("cat", root, "--repo", str(repo)).stdout == TEXT.read_bytes()
        _flip_a_bit(repo, leaves[1])
    run_cli("add", str(TEXT), "--repo", str(repo))
    assert run_cli("repo", "verify", "--repo", str(repo)).returncode == 0


def test_cat_fetches_an_intact_copy_from_a_peer(tmp_path: Path) -> None:
    repo, peer_repo = tmp_path / "repo", tmp_path / "peer"
    root = run_cli("add", str(TEXT), "--repo", str(repo)).stdout.decode().split()[-1]
    run_cli("add", str(TEXT), "--repo", str(peer_repo))
    _, leaves = _leaves(TEXT)
    _flip_a_bit(repo, leaves[0])
    with PeerProcess(peer_repo) as peer:
        result = run_cli("cat", root, "--repo", str(repo), "--bootstrap", peer.addr)
    assert result.stdout == TEXT.read_bytes()
    assert b"is corrupt" in result.stderr  # said, not hidden
    assert run_cli("repo", "verify", "--repo", str(repo)).returncode == 0  # repaired


async def test_a_job_on_corrupt_input_fails_fast_naming_the_block(master: Node,
                                                                 swarm: Swarm) -> None:
    """No peer has an intact copy: no retry can succeed, and the job says so
    in seconds (it used to fail after 126 s with a bare INPUT_NOT_FOUND)."""
    cid = await master.add_path(TEXT)
    _, leaves = _leaves(TEXT)
    bad = _flip_a_bit(master.repo, leaves[1])
    await trio.to_thread.run_sync(swarm.start)
    job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1)
    started = trio.current_time()
    with trio.fail_after(60), pytest.raises(JobFailed) as info:
        await job.run()
    message = str(info.value)
    assert "corrupt in the master's repo" in message and str(leaves[1]) in message
    assert bad.name in message and "repo verify" in message
    print(f"corrupt input: the job failed after {trio.current_time() - started:.1f}s")


async def test_the_master_repairs_its_input_from_a_peer(master: Node, swarm: Swarm) -> None:
    """The input's root is corrupt in the master's repo; a peer has the file."""
    cid = await master.add_path(TEXT)
    await trio.to_thread.run_sync(
        lambda: run_cli("add", str(TEXT), "--repo", str(swarm.base / "seeded")))
    await trio.to_thread.run_sync(lambda: swarm.start(name="seeded"))
    _flip_a_bit(master.repo, cid)
    with trio.fail_after(60):
        root = await InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1).run()
    assert await output_counts(master, root) == reference_counts([TEXT])
    assert await master.local.verify(cid)  # type: ignore[union-attr]


async def test_a_peer_with_a_corrupt_copy_fetches_a_good_one(master: Node,
                                                            swarm: Swarm) -> None:
    """The peer's own copy of an input block went bad: it must not map the
    corrupt bytes; it fetches the block again and the output is exact."""
    cid = await master.add_path(TEXT)
    seeded = swarm.base / "seeded"
    await trio.to_thread.run_sync(lambda: run_cli("add", str(TEXT), "--repo", str(seeded)))
    _, leaves = _leaves(TEXT)
    for leaf in leaves:
        _flip_a_bit(seeded, leaf)
    peer = await trio.to_thread.run_sync(lambda: swarm.start(name="seeded"))
    with trio.fail_after(60):
        root = await InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1).run()
    assert await output_counts(master, root) == reference_counts([TEXT])
    assert "is corrupt" in peer.stderr
    assert all(FlatFS(seeded).read(leaf) is not None for leaf in leaves)
