"""No hub: map outputs move peer to peer, and the master keeps only the job's
input and output (spec section 7). A lost map output is recomputed."""

from __future__ import annotations

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
