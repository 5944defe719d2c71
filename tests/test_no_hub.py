"""No hub: map outputs move peer to peer, and the master keeps only the job's
input and output (spec section 7). A lost map output is recomputed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import trio

from p2pmr import InitMaster
from p2pmr.master.outputs import MapOutput
from p2pmr.node import Node
from p2pmr.storage import unixfs

from .conftest import peers
from .helpers import GUTENBERG
from .swarm import Swarm, load_with_env, output_lines, run_while


def expected_lines(paths: list[Path]) -> list[str]:
    """What the lines job outputs: every distinct line and how often it occurs."""
    counts: Counter[str] = Counter()
    for path in paths:
        lines = path.read_bytes().split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        for i, raw in enumerate(lines):
            text = raw[:-1] if raw.endswith(b"\r") and i < len(lines) - 1 else raw
            counts[text.decode("utf-8", "replace")] += 1
    return sorted(f"{line}\t{count}" for line, count in counts.items())


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def test_the_master_keeps_input_and_output_only(master: Node, tmp_path: Path) -> None:
    """A shuffle as large as the input, on separate peer processes: the
    intermediate data never passes through the master's repo."""
    files = sorted(GUTENBERG.iterdir())
    cid = await master.add_path(GUTENBERG)
    job = InitMaster(master, cid, job=load_with_env("lines.py", P2PMR_LINES_SLEEP="0"),
                     n_reducers=3)
    async with peers(master, tmp_path / "peers", 3):
        with trio.fail_after(240):
            root = await job.run()
    assert sorted(await output_lines(master, root)) == expected_lines(files)
    input_size = sum(p.stat().st_size for p in GUTENBERG.iterdir())
    output_size = 0
    for entry in await unixfs.list_directory(master.blocks, root):
        output_size += len(await unixfs.read_range(master.blocks, entry.cid))
    repo = tree_size(master.repo)
    shuffled = sum(n for t in job.get_tasks("map") if isinstance(t.output, MapOutput)
                   for n in t.output.partition_records)
    assert shuffled > 0
    print(f"master repo {repo} bytes; input {input_size}, output {output_size}")
    assert repo <= 1.1 * (input_size + output_size)


async def test_a_peer_holding_map_outputs_dies_before_the_reduces(
        master: Node, swarm: Swarm) -> None:
    """The peer that made some map outputs is killed once its tasks completed
    and before any reduce could fetch them: they run again elsewhere (same
    CIDs), and the job ends exact."""
    files = sorted(GUTENBERG.iterdir())
    cid = await master.add_path(GUTENBERG)
    for _ in range(3):
        await trio.to_thread.run_sync(swarm.start)
    job = InitMaster(master, cid, job=load_with_env("lines.py", P2PMR_LINES_SLEEP="0.4"),
                     n_reducers=3)
    killed: list[str] = []

    async def kill_a_holder() -> None:
        by_id = {p.peer_id: p for p in swarm.peers}
        while not killed:
            held: Counter[str] = Counter(
                str(t.completed_by) for t in job.scheduler.phase_tasks("map")
                if t.state.value == "completed" and isinstance(t.output, MapOutput)
                and not t.output.local)
            victim = next((p for p, n in held.most_common() if n >= 2 and p in by_id), None)
            if victim is not None and not job.get_map_status().done:
                by_id[victim].kill()
                killed.append(victim)
            await trio.sleep(0.05)

    root = await run_while(job, kill_a_holder, 240)
    assert killed
    assert sorted(await output_lines(master, root)) == expected_lines(files)
    assert job._intermediates is not None and job._intermediates.reruns >= 2
    assert not any(r.excluded for r in job.get_peer_status().values())


async def test_two_replicas_keep_a_copy_at_the_master(master: Node, tmp_path: Path) -> None:
    """With ``replicas=2`` the master fetches every map output before its task
    counts (revision r2's rule): nothing is ever recomputed for a lost peer."""
    files = sorted(GUTENBERG.iterdir())
    cid = await master.add_path(GUTENBERG)
    job = InitMaster(master, cid, job=load_with_env("lines.py", P2PMR_LINES_SLEEP="0"),
                     n_reducers=2, replicas=2)
    async with peers(master, tmp_path / "peers", 2):
        with trio.fail_after(240):
            root = await job.run()
    assert sorted(await output_lines(master, root)) == expected_lines(files)
    outputs = [t.output for t in job.get_tasks("map")]
    assert outputs and all(isinstance(o, MapOutput) and o.local for o in outputs)
    for output in outputs:
        assert isinstance(output, MapOutput)
        for part in output.partitions:
            assert part is None or not await master.blocks.missing(part)


async def test_resumed_master_reruns_maps_whose_holders_are_gone(master: Node,
                                                                 tmp_path: Path) -> None:
    """The master stops after the map phase, and the peers that held the map
    outputs leave too: the resumed master, with new peers, restores those map
    tasks from its journal, finds their holders gone, and runs them again."""
    files = sorted(GUTENBERG.iterdir())
    cid = await master.add_path(GUTENBERG)
    job = load_with_env("lines.py", P2PMR_LINES_SLEEP="0")
    async with peers(master, tmp_path / "first", 2):
        first = InitMaster(master, cid, job=job, n_reducers=2)
        with trio.fail_after(120):
            root = await first.run()
    journal = master.repo / "jobs" / str(first.job_cid) / "journal"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    kept = [r for r in records if r.get("t") != "output" and r.get("phase") != "reduce"]
    journal.write_text("".join(json.dumps(r) + "\n" for r in kept))
    async with peers(master, tmp_path / "second", 2):
        again = InitMaster(master, cid, job=job, n_reducers=2, resume=True, fresh=True)
        with trio.fail_after(180):
            assert await again.run() == root
    assert again.resumed_tasks == first.get_map_status().total
    assert again.map_reruns > 0
    assert sorted(await output_lines(master, root)) == expected_lines(files)
