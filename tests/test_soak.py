"""Long soak variants of the fault-tolerance tests: `scripts/test.sh -m slow`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from p2pmr import InitMaster
from p2pmr.job import load_job_file
from p2pmr.node import Node

from .helpers import GUTENBERG, ROOT, gutenberg_files
from .swarm import Swarm, load_with_env, output_counts, reference_counts, run_while

pytestmark = pytest.mark.slow


async def test_crash_soak_all_texts_many_kills(master: Node, swarm: Swarm) -> None:
    cid = await master.add_path(GUTENBERG)
    job = load_with_env("crash.py", P2PMR_CRASH_MAX_SLEEP="10")
    for i in range(4):
        await trio.to_thread.run_sync(lambda i=i: swarm.start(name=f"soak-{i}"))
    rng = random.Random(1)
    master_job = InitMaster(master, cid, job=job, n_reducers=5, peer_timeout=3)

    async def chaos() -> None:
        while True:
            await trio.sleep(rng.uniform(2, 6))
            alive = [p for p in swarm.peers if p.proc.poll() is None]
            victim = rng.choice(alive)
            victim.kill()
            await trio.sleep(rng.uniform(0.5, 3))
            await trio.to_thread.run_sync(lambda r=victim.repo: swarm.start(name=r.name))

    root = await run_while(master_job, chaos, 900)
    assert await output_counts(master, root) == reference_counts(sorted(GUTENBERG.iterdir()))


@pytest.mark.parametrize("seed", range(4))
async def test_churn_soak_random_mixes(master: Node, swarm: Swarm, seed: int) -> None:
    rng = random.Random(seed)
    modes = ["good", "exit-now", "exit-random", "hang-after-accept", "hang-silent"]
    cid = await master.add_path(GUTENBERG)
    await trio.to_thread.run_sync(swarm.start)  # at least one good peer
    for i in range(rng.randint(3, 7)):
        mode = rng.choice(modes)
        await trio.to_thread.run_sync(
            lambda m=mode, s=seed * 100 + i: swarm.start(None if m == "good" else m, seed=s))
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    job = InitMaster(master, cid, job=wordcount, n_reducers=rng.randint(1, 6), peer_timeout=2)

    async def churn() -> None:
        while True:
            await trio.sleep(rng.uniform(1, 3))
            if rng.random() < 0.5:
                await trio.to_thread.run_sync(swarm.start)
            else:
                alive = [p for p in swarm.peers if p.proc.poll() is None]
                if len(alive) > 2:
                    rng.choice(alive).kill()

    root = await run_while(job, churn, 600)
    assert await output_counts(master, root) == reference_counts(sorted(GUTENBERG.iterdir()))


async def test_big_input_with_peer_loss(master: Node, swarm: Swarm, tmp_path: Path) -> None:
    data = b"".join(p.read_bytes() for p in gutenberg_files())
    path = tmp_path / "big.txt"
    path.write_bytes(data * 30)  # about 95 MiB, 378 splits
    cid = await master.add_path(path)
    for _ in range(3):
        await trio.to_thread.run_sync(swarm.start)
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    job = InitMaster(master, cid, job=wordcount, n_reducers=4)

    async def lose_one() -> None:
        await trio.sleep(8)
        swarm.peers[0].kill()

    root = await run_while(job, lose_one, 900)
    assert await output_counts(master, root) == reference_counts([path])
