"""Master and peer logic in one process (p2pmr.testing): the real master and
peers over in-memory streams, in a second or two. Real-process tests of the
same behaviour live beside these; these are for the logic, fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.id import ID as PeerID

from p2pmr import InitMaster, JobFailed, NotAuthorised
from p2pmr.job import load_job_file
from p2pmr.node import Node
from p2pmr.peer import Faults
from p2pmr.storage import unixfs
from p2pmr.testing import MemorySwarm, memory_swarm
from p2pmr.wire.codes import ErrorCode
from p2pmr.wire.messages import (
    Assignment,
    Error,
    JobSpec,
    MapResult,
    MapTask,
    ReduceResult,
    ReduceTask,
)

from .conftest import peers
from .helpers import GUTENBERG, ROOT
from .swarm import expected_records, output_counts, output_lines, reference_counts

WORDCOUNT = ROOT / "examples" / "wordcount.py"
RECORDS = ROOT / "tests" / "jobs" / "records.py"
TEXTS = sorted(GUTENBERG.glob("pg-*.txt"))[:3]


async def _input(swarm: MemorySwarm) -> object:
    return await unixfs.add_path(swarm.master.blocks, GUTENBERG)


async def test_a_job_runs_exactly_in_memory() -> None:
    async with memory_swarm(peers=2) as swarm:
        cid = await _input(swarm)
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=3)
        with trio.fail_after(60):
            root = await job.run()
        assert await output_counts(swarm.master, root) == \
            reference_counts(sorted(GUTENBERG.iterdir()))
        assert job.phase == "done" and job.get_reduce_status().complete == 3


async def test_the_in_memory_swarm_gives_the_real_swarms_outputs(master: Node,
                                                                 tmp_path: Path) -> None:
    """The in-memory swarm is the real engine: the same job on the same input
    gives the same output CID as on peer processes."""
    wordcount = load_job_file(WORDCOUNT)
    async with memory_swarm(peers=1) as swarm:
        cid = await unixfs.add_path(swarm.master.blocks, TEXTS[0])
        memory_root = await InitMaster(swarm.master, cid, job=wordcount, n_reducers=2).run()
    assert await master.add_path(TEXTS[0]) == cid
    async with peers(master, tmp_path / "peers", 1):
        real_root = await InitMaster(master, cid, job=wordcount, n_reducers=2).run()
    assert real_root == memory_root


@settings(max_examples=25, deadline=None)
@given(lines=st.lists(st.binary(max_size=90).map(lambda b: b.replace(b"\n", b"")),
                      min_size=1, max_size=40),
       chunk=st.sampled_from([16, 61, 256]), split_size=st.sampled_from([0, 40, 150, 700]),
       group=st.sampled_from([1, 2, 5]))
async def test_any_blocks_in_any_runs_give_every_line_once(
        lines: list[bytes], chunk: int, split_size: int, group: int) -> None:
    """Tiny blocks gathered into runs of any size: every line exactly once,
    whether a block edge falls inside a task's run or between two runs."""
    data = b"\n".join(lines)
    async with memory_swarm(peers=2) as swarm:
        cid = await unixfs.add_bytes(swarm.master.blocks, data,
                                     unixfs.ImportOptions(chunk_size=chunk))
        job = InitMaster(swarm.master, cid, job=load_job_file(RECORDS), n_reducers=2,
                         split_size=split_size, boundary_group=group)
        with trio.fail_after(60):
            root = await job.run()
        got = sorted(await output_lines(swarm.master, root))
    whole = lines[:-1] if lines[-1] == b"" else lines  # no line after a final "\n"
    assert got == expected_records(whole, "")


class FailFast(Faults):
    """Answers every task at once with an internal error."""

    async def on_task(self, task: MapTask | ReduceTask, job: JobSpec
                      ) -> MapResult | ReduceResult | Error | None:
        return Error(ErrorCode.INTERNAL, "broken", id=task.id)


async def test_a_fast_failing_peer_cannot_fail_the_job() -> None:
    async with memory_swarm(peers=0) as swarm:
        bad = await swarm.add_peer(faults=FailFast())
        for _ in range(2):
            await swarm.add_peer()
        cid = await _input(swarm)
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=2)
        with trio.fail_after(60):
            root = await job.run()
        assert await output_counts(swarm.master, root) == \
            reference_counts(sorted(GUTENBERG.iterdir()))
        status = job.get_peer_status()[str(bad.peer_id)]
        tasks = job.scheduler.phase_tasks("map") + job.scheduler.phase_tasks("reduce")
        assert status.failed == sum(t.failed_on.get(bad.peer_id, 0) for t in tasks) >= 1
        assert max(t.failed_on.get(bad.peer_id, 0) for t in tasks) == 1
        assert status.excluded == (status.failed >= 3)


async def test_a_peer_that_does_not_trust_the_master_fails_the_job_in_seconds() -> None:
    async with memory_swarm(peers=0) as swarm:
        await swarm.add_peer(trusted=False)
        cid = await unixfs.add_path(swarm.master.blocks, TEXTS[0])
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=1,
                         wait_for_workers=3)
        with trio.fail_after(30), pytest.raises(NotAuthorised, match="does not trust this master"):
            await job.run()


class Hang(Faults):
    async def on_task(self, task: MapTask | ReduceTask, job: JobSpec
                      ) -> MapResult | ReduceResult | Error | None:
        await trio.sleep_forever()
        return None


async def test_a_peer_that_vanishes_mid_job_loses_only_its_tasks() -> None:
    async with memory_swarm(peers=1) as swarm:
        hanging = await swarm.add_peer(faults=Hang())
        cid = await _input(swarm)
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=2,
                         peer_timeout=1)

        async def cut_off() -> None:
            while not job.get_peer_status().get(str(hanging.peer_id)):  # noqa: ASYNC110
                await trio.sleep(0.05)
            while not job.get_peer_status()[str(hanging.peer_id)].in_progress:  # noqa: ASYNC110
                await trio.sleep(0.05)
            swarm.disconnect(hanging)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cut_off)
                root = await job.run()
        assert await output_counts(swarm.master, root) == \
            reference_counts(sorted(GUTENBERG.iterdir()))
        assert not job.get_peer_status()[str(hanging.peer_id)].online


async def test_code_pickled_for_another_python_is_refused_at_once() -> None:
    """Pickled code holds bytecode: a peer on another Python cannot load it,
    and says so before fetching anything."""
    from p2pmr.storage.cid import CID
    from p2pmr.wire.framing import PROTOCOL_ID, FrameReader, FrameWriter
    from p2pmr.wire.messages import Phase, Split, TaskId

    async with memory_swarm(peers=1) as swarm:
        job = CID.hash(b"job")
        task = MapTask(TaskId(job, Phase.MAP, 0), split=Split(CID.hash(b"b"), "", 0, 1, True,
                                                                True))
        stream = await swarm.master.network.open_stream(swarm.peers[0].peer_id, PROTOCOL_ID)
        await FrameWriter(stream).write(Assignment(
            JobSpec(job, CID.hash(b"code"), 1, runtime="cpython-2.7 cloudpickle-0.5"),
            maps=(task,)))
        with trio.fail_after(10):
            reply = await FrameReader(stream).read(10)
    assert isinstance(reply, Error) and reply.code is ErrorCode.BAD_JOB
    assert "pickled for cpython-2.7" in reply.message and "same Python version" in reply.message


class OtherPython(Faults):
    """Refuses every assignment as a peer on another Python version does."""

    async def on_assignment(self, assignment: Assignment, remote: PeerID) -> Error | None:
        return Error(ErrorCode.BAD_JOB, "the job's code was pickled for cpython-3.11, and "
                     "this peer runs cpython-3.13")


async def test_a_peer_that_cannot_load_the_job_is_excluded_at_once() -> None:
    async with memory_swarm(peers=1) as swarm:
        other = await swarm.add_peer(faults=OtherPython())
        cid = await unixfs.add_path(swarm.master.blocks, TEXTS[0])
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=2)
        with trio.fail_after(60):
            root = await job.run()
        assert await output_counts(swarm.master, root) == reference_counts(TEXTS[:1])
        status = job.get_peer_status()[str(other.peer_id)]
        assert status.excluded and status.failed <= 1
        assert "pickled for cpython-3.11" in status.excluded_reason


async def test_a_job_no_peer_can_load_fails_naming_the_runtimes() -> None:
    async with memory_swarm(peers=0) as swarm:
        await swarm.add_peer(faults=OtherPython())
        cid = await unixfs.add_path(swarm.master.blocks, TEXTS[0])
        job = InitMaster(swarm.master, cid, job=load_job_file(WORDCOUNT), n_reducers=1,
                         wait_for_workers=2)
        with trio.fail_after(30), pytest.raises(JobFailed, match=r"this peer runs cpython-3\.13"):
            await job.run()
