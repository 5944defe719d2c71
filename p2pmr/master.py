"""The master: plans a job, hands tasks to peers, and assembles the output.

A master is any node. It stores the job's code and descriptor in IPFS,
resolves the input CID into map splits (one per leaf block), and then runs
two phases. Map tasks go to peers that advertise ``/ipfs/mapreduce/1.0.0``;
boundary tasks map the lines that straddle blocks once the fragments on
both sides are known; then one reduce task per partition. The output is a
UnixFS directory of ``part-NNNNN`` files and a ``_manifest.json``.

Durability choice (see ``protocols/mapreduce.md``): the master fetches every
completed task's output into its own store *before* counting the task as
complete. A map output is therefore never at risk when a peer dies, reduce
tasks can always fetch their inputs from the master, and the final output
stays retrievable from the master's repo after every peer has gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import trio

from ._libp2p import close_quietly, protocols_of
from ._worker import encode_records
from .errors import (
    BlockNotFound,
    CIDError,
    JobError,
    JobFailed,
    P2PMRError,
    ProtocolError,
    UnixFSError,
    collapsed,
)
from .job import Job, JobDescriptor, dump_job, is_job_like
from .journal import Journal, find_journal
from .node import Node
from .protocol import (
    PROTOCOL_ID,
    FrameReader,
    FrameWriter,
    body,
    error_code_name,
    pb,
)
from .records import BlockEdges, SplitInfo, stitch_file
from .scheduler import Attempt, FailureKind, PhaseStatus, Policy, Scheduler, State, Task
from .storage import unixfs
from .storage.base import Fetcher, dag_links, fetch_dag
from .storage.cid import CID

__all__ = ["InitMaster", "Master", "MasterOptions"]

log = logging.getLogger(__name__)

MAP: Final = "map"
REDUCE: Final = "reduce"
_INLINE_INPUTS: Final = 2000  # more reduce inputs than this travel as a list file


@dataclass(frozen=True)
class MasterOptions:
    """Deadlines and policy for a job. Every network wait has a deadline."""

    heartbeat_interval: float = 0.5   # peers send Progress this often
    peer_timeout: float = 5.0         # silence after which a peer counts as dead
    task_timeout: float | None = None  # per attempt; None: 60 s + 10x the typical task
    connect_timeout: float = 10.0
    fetch_timeout: float = 60.0
    input_timeout: float = 30.0       # resolving the input CID
    wait_for_workers: float = 120.0   # how long to wait with no usable worker
    encoding: str = "msgpack"
    cid_version: int = 0
    boundary_group: int = 128         # splits per boundary task
    verify: int = 1                   # run each task on this many peers; outputs must agree
    journal: bool = True
    resume: bool = False
    resume_job: CID | None = None     # resume this journaled job (default: find a match)
    policy: Policy = field(default_factory=Policy)


@dataclass
class SplitPayload:
    file: int
    path: str
    cid: CID
    offset: int
    size: int
    first: bool
    last: bool


@dataclass
class BoundaryPayload:
    file: int
    group: int
    first_split: int   # splits whose boundaries this task maps: (first, last]
    last_split: int
    records: CID | None = None
    building: bool = False


def _peer_timings(result: Any) -> dict[str, float]:
    t = result.timings
    return {"fetch": t.fetch_ms / 1000, "queue": t.queue_ms / 1000,
            "compute": t.compute_ms / 1000, "store": t.store_ms / 1000}


@dataclass
class MapOutput:
    partitions: list[CID | None]
    partition_records: list[int]
    records_in: int
    records_out: int
    edges: BlockEdges | None = None
    head: bytes | None = None
    tail: bytes | None = None
    timings: dict[str, float] = field(default_factory=dict)  # not journaled


@dataclass
class ReduceOutput:
    cid: CID
    records_in: int
    keys: int
    records_out: int
    size: int
    timings: dict[str, float] = field(default_factory=dict)  # not journaled


class _AttemptFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, traceback: str = "",
                 blame: bool = True, exclude: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.blame = blame
        self.exclude = exclude


def _classify(code: int) -> tuple[FailureKind, bool, bool]:
    """(kind, blame the peer, exclude the peer at once) for a peer's error code."""
    if code in (pb.USER_CODE_ERROR, pb.LIMIT_EXCEEDED, pb.BAD_JOB):
        return FailureKind.USER, False, False
    if code == pb.WORKER_DIED:
        return FailureKind.WORKER, False, False
    if code in (pb.NOT_AUTHORISED, pb.UNSUPPORTED_VERSION):
        return FailureKind.INFRA, True, True
    if code == pb.INPUT_NOT_FOUND:
        return FailureKind.INPUT, False, False
    if code == pb.BUSY:
        return FailureKind.BUSY, False, False
    # Anything else, CANCELLED included: the master drops a task it cancels
    # and never reads an answer for it, so a CANCELLED it does read is the
    # peer giving up on its own.
    return FailureKind.INFRA, True, False


class Master:
    """One MapReduce job. Create with :func:`InitMaster`, then ``await run()``."""

    def __init__(self, node: Node, data_cid: CID | str, job: Job | None, n_reducers: int,
                 options: MasterOptions | None = None, *, code: bytes | None = None,
                 name: str | None = None) -> None:
        if not isinstance(n_reducers, int) or n_reducers < 1:
            raise JobError(f"n_reducers must be a positive integer, not {n_reducers!r}")
        self.node = node
        self.input = CID.parse(data_cid)
        self.job = job
        self.code = code
        self.name = name or (job.name if job is not None else "job")
        self.reducers = n_reducers
        self.options = options or MasterOptions()
        policy = self.options.policy
        if self.options.verify > 1:
            policy = dataclasses.replace(
                policy, verify=self.options.verify,
                max_attempts_running=max(policy.max_attempts_running, self.options.verify + 1))
        self.scheduler = Scheduler(policy)
        self.job_cid: CID | None = None
        self.code_cid: CID | None = None
        self.output: CID | None = None
        self.manifest: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.files: list[tuple[str, CID]] = []
        self.descriptor: JobDescriptor | None = None
        self.manifest_counts: dict[str, int] = {}
        self.resumed_tasks = 0
        self.finished: CID | None = None
        self._splits: list[list[int]] = []          # per file: map task indices of its splits
        self._split_info: dict[int, SplitInfo] = {}  # map task index -> split info
        self._boundaries: list[list[int]] = []      # per file: its boundary task indices
        self._prefix: list[int] = []                # per file: splits done from its start
        self._next_group: list[int] = []            # per file: next boundary group to ready
        self._wake = trio.Event()
        self._fatal: JobFailed | None = None
        self.phase = "planning"  # then "map", "reduce", "assembling", "done" or "failed"
        self._settling = 0  # completions still being journaled and unlocked
        self._last_seen: dict[Any, float] = {}     # for silence: last sign of life
        self._last_heard: dict[Any, float] = {}    # its last frame, or assignment to it
        self._last_charged: dict[Any, float] = {}  # when a failure was last charged to it
        self._journal: Journal | None = None
        self._nursery: trio.Nursery | None = None
        self._started_at: float | None = None

    # -- status API ----------------------------------------------------------------

    def get_map_status(self) -> PhaseStatus:
        return self.scheduler.status(MAP)

    def get_reduce_status(self) -> PhaseStatus:
        if not self.scheduler.phase_tasks(REDUCE):
            return PhaseStatus(total=self.reducers, idle=self.reducers)
        return self.scheduler.status(REDUCE)

    def get_peer_status(self) -> dict[str, Any]:
        return self.scheduler.peer_status()

    def get_tasks(self, phase: str = MAP) -> list[Any]:
        return self.scheduler.infos(phase)

    def task_profile(self) -> dict[str, dict[str, float]]:
        """Where task time went, summed per phase: the master's view of each
        winning attempt (wall) and the peer's (fetch, queue, compute, store)."""
        profile: dict[str, dict[str, float]] = {}
        for phase in (MAP, REDUCE):
            sums = {"tasks": 0.0, "wall": 0.0, "fetch": 0.0, "queue": 0.0, "compute": 0.0,
                    "store": 0.0}
            for task in self.scheduler.phase_tasks(phase):
                if task.duration is None or task.output is None:
                    continue
                sums["tasks"] += 1
                sums["wall"] += task.duration
                for key, value in task.output.timings.items():
                    sums[key] += value
            profile[phase] = {k: round(v, 3) for k, v in sums.items()}
        return profile

    def _signal(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    # -- running -----------------------------------------------------------------------

    async def run(self) -> CID:
        """Run the job to completion and return the output directory's CID.

        Returns only once every part is complete and stored in this node's
        repo. Raises :class:`JobFailed` with the reason (and, for user-code
        errors, the remote traceback) if the job cannot finish.
        """
        self._started_at = time.monotonic()
        try:
            with collapsed():
                await self._run()
        except BaseException:
            self.phase = "failed"
            raise
        finally:
            if self._journal is not None:
                self._journal.close()
        self.phase = "done"
        self.timings["total"] = time.monotonic() - self._started_at
        log.info("job %s finished in %.2fs: %s", self.job_cid, self.timings["total"], self.output)
        assert self.output is not None
        return self.output

    async def _run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_peers)
            await self._prepare()
            if self.finished is not None:
                self.output = self.finished
                # Every task, the reduces too (never planned in this process).
                self.resumed_tasks = len(self.scheduler.phase_tasks(MAP)) + self.reducers
                nursery.cancel_scope.cancel()
                return
            phase_start = time.monotonic()
            self.phase = MAP
            await self._run_phase(MAP)
            self.timings["map"] = time.monotonic() - phase_start
            phase_start = time.monotonic()
            self._plan_reduce()
            await self._prepare_reduce_lists()
            self.phase = REDUCE
            await self._run_phase(REDUCE)
            self.timings["reduce"] = time.monotonic() - phase_start
            self.phase = "assembling"
            self.output = await self._assemble()
            nursery.cancel_scope.cancel()

    async def _prepare(self) -> None:
        start = time.monotonic()
        blocks = self.node.blocks
        opts = unixfs.ImportOptions(cid_version=self.options.cid_version)
        journal_dir = self.node.repo / "jobs"
        resumed = None
        if self.options.resume:
            if self.options.resume_job is not None:
                resumed = find_journal(journal_dir, job=self.options.resume_job,
                                       include_complete=True)
            else:
                resumed = find_journal(journal_dir, input_cid=self.input,
                                       reducers=self.reducers, name=self.name,
                                       include_complete=True)
            if resumed is None:
                log.warning("nothing to resume for this job in %s: starting it afresh",
                            journal_dir)
        if resumed is not None:
            descriptor = resumed.descriptor
            self.code_cid = descriptor.code
            await self._check_same_code(descriptor)
            if not await self._available(self.code_cid):
                raise JobFailed(f"cannot resume: the job code {self.code_cid} is gone")
            # The journaled run's settings decide what its journaled outputs
            # mean: its encoding, CID version and boundary grouping hold.
            self.input, self.reducers, self.name = \
                descriptor.input, descriptor.reducers, descriptor.name
            self.options = dataclasses.replace(
                self.options, encoding=descriptor.encoding, cid_version=descriptor.cid_version,
                boundary_group=descriptor.boundary_group)
            opts = unixfs.ImportOptions(cid_version=self.options.cid_version)
            log.info("resuming job %s from its journal", resumed.job)
        else:
            code = self.code
            if code is None:
                if self.job is None:
                    raise JobError("no job to run and no unfinished job to resume")
                code = dump_job(self.job)
            self.code_cid = await unixfs.add_bytes(blocks, code, opts)
            descriptor = JobDescriptor(self.code_cid, self.input, self.reducers,
                                       self.options.encoding, self.options.cid_version,
                                       self.name, max(1, self.options.boundary_group))
        self.descriptor = descriptor
        self.job_cid = await unixfs.add_bytes(blocks, descriptor.to_json(), opts)
        await self._resolve_input()
        if self.options.journal:
            self._journal = Journal.open(journal_dir, self.job_cid, descriptor,
                                         fresh=resumed is None)
            self.finished = await self._finished_output(self._journal.records)
            if self.finished is None:
                await self._replay(self._journal.records)
        self.timings["plan"] = time.monotonic() - start

    async def _check_same_code(self, descriptor: JobDescriptor) -> None:
        """Say so when the code given is not the journaled run's.

        A resumed job runs the journaled code: its completed tasks are that
        code's results. Pickled code can differ without any change to the
        source (a job object holding a set, pickled in a process with another
        hash seed), so this warns rather than refuses.
        """
        code = self.code
        if code is None and self.job is not None:
            code = dump_job(self.job)
        if code is None:
            return  # resuming by journal alone: its code is the code
        ours, _ = unixfs.import_bytes(code, unixfs.ImportOptions(
            cid_version=descriptor.cid_version))
        if ours != descriptor.code:
            log.warning("the job's code (%s) is not the journaled run's (%s): resuming with "
                        "the journaled code; run without --resume to use the new code",
                        ours, descriptor.code)

    async def _available(self, cid: CID) -> bool:
        return not await self.node.blocks.missing(cid)

    async def _resolve_input(self) -> None:
        blocks = self.node.blocks
        try:
            with trio.fail_after(self.options.input_timeout):
                self.files = await unixfs.walk_files(Fetcher(blocks, self.options.input_timeout),
                                                     self.input)
                segments = [await unixfs.file_segments(
                    Fetcher(blocks, self.options.input_timeout), cid) for _, cid in self.files]
        except trio.TooSlowError:
            raise JobFailed(f"input {self.input} could not be resolved within "
                            f"{self.options.input_timeout:g}s") from None
        except BlockNotFound as exc:
            raise JobFailed(f"input {self.input} could not be resolved: {exc}") from None
        except (UnixFSError, CIDError) as exc:
            raise JobFailed(f"input {self.input} is not a UnixFS file or directory: {exc}") \
                from None
        tasks: list[Task] = []
        group = max(1, self.options.boundary_group)
        for file_index, ((path, _), segs) in enumerate(zip(self.files, segments, strict=True)):
            indices = []
            for i, seg in enumerate(segs):
                payload = SplitPayload(file_index, path, seg.cid, seg.offset, seg.size,
                                       i == 0, i == len(segs) - 1)
                index = len(tasks)
                tasks.append(Task(MAP, index, payload))
                self._split_info[index] = SplitInfo(seg.offset, seg.size, i == 0,
                                                    i == len(segs) - 1)
                indices.append(index)
            self._splits.append(indices)
            self._prefix.append(0)
            self._next_group.append(0)
        for file_index, indices in enumerate(self._splits):
            bounds = []
            for g in range(math.ceil((len(indices) - 1) / group)):
                first, last = g * group, min(len(indices) - 1, (g + 1) * group)
                index = len(tasks)
                tasks.append(Task(MAP, index, BoundaryPayload(file_index, g, first, last),
                                  ready=False))
                bounds.append(index)
            self._boundaries.append(bounds)
        self.scheduler.add_tasks(MAP, tasks)
        self.manifest_counts = {"files": len(self.files),
                                "splits": sum(len(s) for s in self._splits),
                                "boundary_tasks": sum(len(b) for b in self._boundaries)}
        log.info("job %s: %d file(s), %d split(s), %d boundary task(s), %d reducer(s)",
                 self.job_cid, len(self.files), self.manifest_counts["splits"],
                 self.manifest_counts["boundary_tasks"], self.reducers)

    # -- journal replay ------------------------------------------------------------------

    async def _finished_output(self, records: list[dict[str, Any]]) -> CID | None:
        """The output of an already finished run, if it is still intact here."""
        for record in reversed(records):
            if record.get("t") == "output":
                try:
                    output = CID.parse(record["cid"])
                except (KeyError, CIDError):
                    return None
                if await self._available(output):
                    log.info("job %s had already finished: %s", self.job_cid, output)
                    return output
                return None
        return None

    async def _replay(self, records: list[dict[str, Any]]) -> None:
        done = 0
        for phase in (MAP, REDUCE):
            if phase == REDUCE:
                if not self.scheduler.phase_done(MAP):
                    break
                self._plan_reduce()
            for record in records:
                if record.get("t") == "done" and record.get("phase") == phase:
                    done += await self._replay_one(phase, record)
        for file_index in range(len(self._splits)):
            await self._update_boundaries(file_index)
        self.resumed_tasks = done
        if done:
            log.info("resumed %d completed task(s) from the journal", done)

    async def _replay_one(self, phase: str, record: dict[str, Any]) -> int:
        tasks = self.scheduler.phase_tasks(phase)
        index = record.get("index", -1)
        if not 0 <= index < len(tasks) or tasks[index].state is State.COMPLETED:
            return 0
        task = tasks[index]
        output = _output_from_json(phase, record["output"])
        if not await self._outputs_available(output):
            log.info("journal: outputs of %s task %d are gone; it will run again",
                     phase, index)
            return 0
        if phase == MAP and isinstance(task.payload, BoundaryPayload):
            task.payload.records = CID.parse(record["records"]) if record.get("records") \
                else None
            self.scheduler.mark_ready(task)
        self.scheduler.restore(task, output)
        if isinstance(output, MapOutput) and isinstance(task.payload, SplitPayload):
            await self._note_split(task, output)
        return 1

    async def _outputs_available(self, output: MapOutput | ReduceOutput) -> bool:
        cids = output.partitions if isinstance(output, MapOutput) else [output.cid]
        for cid in cids:
            if cid is not None and await self.node.blocks.missing(cid):
                return False
        return True

    # -- dispatch ------------------------------------------------------------------------

    async def _run_phase(self, phase: str) -> None:
        sched = self.scheduler
        no_worker_since: float | None = None
        stalled_since: float | None = None
        while True:
            if self._fatal is not None:
                raise self._fatal
            failed = sched.failed_task(phase)
            if failed is not None:
                raise JobFailed(self._failure_message(failed), failed.last_traceback)
            if sched.phase_done(phase) and not self._settling:
                return
            now = trio.current_time()
            self._enforce_task_timeouts(phase, now)
            assigned = self._dispatch(phase, now)
            running = sched.any_running(phase)
            cooling = any(r.not_before > now for r in sched.usable_peers())
            if assigned or running or cooling or self._settling or not sched.usable_peers():
                stalled_since = None
            elif stalled_since is None:
                stalled_since = now
            elif now - stalled_since > self.options.wait_for_workers:
                stuck = sched.next_idle(phase)
                which = f"{phase} task {stuck.index}" if stuck else f"the {phase} phase"
                raise JobFailed(
                    f"no usable peer can take {which} for {self.options.wait_for_workers:g}s "
                    f"({len(sched.usable_peers())} usable; verify={self.options.verify} needs "
                    f"that many distinct peers)")
            if sched.usable_peers():
                no_worker_since = None
            elif no_worker_since is None:
                no_worker_since = now
                log.info("waiting for workers (peers that speak %s)", PROTOCOL_ID)
            elif now - no_worker_since > self.options.wait_for_workers or (
                    sched.peers and all(r.excluded for r in sched.peers.values())
                    and now - no_worker_since > self._excluded_grace()):
                raise JobFailed(self._no_worker_message(now - no_worker_since))
            with trio.move_on_after(0.25):
                await self._wake.wait()

    def _excluded_grace(self) -> float:
        """How long to wait for a new peer once every peer seen is excluded.

        Excluded peers stay excluded for the job, so only a newcomer could
        help; a trust mistake must cost seconds, not ``wait_for_workers``.
        """
        return min(self.options.wait_for_workers, 10.0)

    def _no_worker_message(self, waited: float) -> str:
        peers = self.scheduler.peers.values()
        excluded = [r for r in peers if r.excluded]
        text = (f"no usable worker for {waited:.0f}s ({len(self.scheduler.peers)} seen, "
                f"{len(excluded)} excluded)")
        if not self.scheduler.peers:
            text += (f": no peer that speaks {PROTOCOL_ID} connected; start peers with "
                     f"`p2pmr peer --bootstrap MASTER_MULTIADDR --trust "
                     f"{self.node.peer_id}` or run with --local-peers N")
        for record in excluded:
            text += f"\n  peer {record.peer} was excluded: {record.excluded_reason}"
        return text

    def _dispatch(self, phase: str, now: float) -> int:
        """Give every peer with room an assignment: as many idle tasks as its
        window allows, but no more than its fair share of what is idle, so
        the last tasks of a phase are spread out rather than queued on one
        peer; or, near the end of the phase, one backup attempt."""
        sched = self.scheduler
        peers = list(sched.available_peers(now))
        idle = sched.idle_count(phase)
        share = max(1, math.ceil(idle / max(1, len(peers))))
        assigned = 0
        for record in peers:
            batch: list[tuple[Task, Attempt]] = []
            while record.in_flight < record.window and len(batch) < share:
                task = sched.next_idle(phase, record.peer)
                if task is None:
                    break
                batch.append((task, sched.start(task, record.peer, now)))
            if not batch:
                task = sched.backup_candidate(phase, record.peer, now)
                if task is None:
                    continue
                log.info("backup attempt of %s task %d on %s", phase, task.index, record.peer)
                batch.append((task, sched.start(task, record.peer, now, backup=True)))
            assert self._nursery is not None
            self._nursery.start_soon(self._run_assignment, phase, record.peer, batch)
            assigned += len(batch)
        return assigned

    def _failure_message(self, task: Task) -> str:
        what = f"{task.phase} task {task.index}"
        if task.user_errors >= self.options.policy.max_user_errors:
            return f"{what} failed {task.user_errors} times: {task.last_error}"
        if task.input_failures >= self.options.policy.max_input_failures:
            return (f"{what} could not fetch its input on {task.input_failures} attempts: "
                    f"{task.last_error}")
        return f"{what} failed {task.failures} times; last error: {task.last_error}"

    def _task_timeout(self, phase: str) -> float:
        if self.options.task_timeout is not None:
            return self.options.task_timeout
        typical = self.scheduler.typical_duration(phase)
        return 60.0 + 10.0 * (typical or 0.0) if typical is not None else 600.0

    def _enforce_task_timeouts(self, phase: str, now: float) -> None:
        limit = self._task_timeout(phase)
        late: set[Any] = set()
        for _, attempt in list(self.scheduler.running_attempts.get(phase, {}).values()):
            if self.scheduler.age(attempt, now) > limit and not attempt.aborted \
                    and attempt.requested is None:
                attempt.abort("timeout", f"no result within {limit:.0f}s")
                late.add(attempt.peer)
        for peer in late:  # one charge per peer, however many tasks it sat on
            self._charge(peer, f"held tasks past the {limit:.0f}s task deadline")

    async def _finish(self, task: Task, attempt: Attempt, kind: str, message: Any) -> None:
        """Handle one task's answer from its assignment stream."""
        if kind == "error":
            failure, blame, exclude = _classify(message.code)
            self._attempt_failed(task, attempt, _AttemptFailed(
                failure, f"{error_code_name(message.code)}: {message.message}",
                message.traceback, blame=blame, exclude=exclude))
            if failure is FailureKind.INPUT and self._nursery is not None:
                self._nursery.start_soon(self._check_corruption, task)
            return
        try:
            if task.phase == MAP:
                output: MapOutput | ReduceOutput = await self._accept_map(task, message,
                                                                          attempt.peer)
            else:
                output = await self._accept_reduce(message, attempt.peer)
        except _AttemptFailed as exc:
            self._attempt_failed(task, attempt, exc)
            return
        if attempt.number not in task.running:
            return  # aborted while we verified it
        won, liars = self.scheduler.succeed(task, attempt, output, trio.current_time(),
                                            signature=_signature(output))
        for liar in liars:
            self._exclude_liar(liar, task)
        self._act_on_exclusions()
        if won:
            for other in list(task.running.values()):
                other.abort("superseded", "another attempt finished first")
            await self._completed(task)
        self._signal()

    async def _check_corruption(self, task: Task) -> None:
        """A peer could not fetch a task's input: is this repo's copy bad?

        The master is where inputs, records files and map outputs come
        from. A block of the task's inputs that turned out corrupt here has
        been set aside; an intact copy is fetched from peers, and if none has
        one, no retry can succeed: the job says so now, naming the block,
        rather than after every attempt has timed out.
        """
        blocks = self.node.blocks
        if not blocks.corrupt:
            return
        bad: set[CID] = set()
        for root in self._inputs_of(task):
            bad.update(cid for cid in await blocks.missing(root) if cid in blocks.corrupt)
        for cid in sorted(bad):
            try:
                await self.node.blocks.get(cid, timeout=self.options.fetch_timeout)
            except BlockNotFound as exc:
                self._fatal = JobFailed(
                    f"{task.phase} task {task.index} needs a block that is corrupt in the "
                    f"master's repo, and no peer has an intact copy: {exc}. Add the input "
                    f"again (`p2pmr add` repairs corrupt blocks it rewrites), and run `p2pmr "
                    f"repo verify --repo {self.node.repo}` to find any other damage")
                self._signal()
                return

    def _inputs_of(self, task: Task) -> list[CID]:
        """The roots of every DAG a task's peer fetches from this master."""
        roots = [self.code_cid] if self.code_cid is not None else []
        payload = task.payload
        if isinstance(payload, SplitPayload):
            roots.append(payload.cid)
        elif isinstance(payload, BoundaryPayload):
            if payload.records is not None:
                roots.append(payload.records)
        else:
            _, inputs, listing = payload
            roots += inputs
            if listing is not None:
                roots.append(listing)
        return roots

    def _attempt_failed(self, task: Task, attempt: Attempt, exc: _AttemptFailed, *,
                        charge: bool = True) -> None:
        """Record one failed attempt; with ``charge``, charge its peer (if at fault).

        Callers that fail several attempts for one event (a stream that
        broke under eight tasks) pass ``charge=False`` and charge once.
        """
        log.info("%s task %d attempt %d on %s failed: %s", task.phase, task.index,
                 attempt.number, attempt.peer, exc.message)
        self.scheduler.fail(task, attempt, exc.kind, exc.message, exc.traceback,
                            blame_peer=False, now=trio.current_time())
        if charge:
            self._charge_for(attempt.peer, exc)
        self._signal()

    def _charge_for(self, peer: Any, exc: _AttemptFailed) -> None:
        if exc.exclude:
            self._exclude(peer, self._exclusion_reason(exc.message))
        elif exc.blame:
            self._charge(peer, exc.message)
        elif exc.kind is FailureKind.BUSY:
            self.scheduler.peer_busy(peer, trio.current_time())

    def _exclusion_reason(self, message: str) -> str:
        if message.startswith("NOT_AUTHORISED"):
            return (f"it does not trust this master (peer ID {self.node.peer_id}). Restart it "
                    f"with `p2pmr peer --trust {self.node.peer_id} ...`, or add that ID to "
                    f"the trusted_masters file in its repo (it is re-read on change)")
        if message.startswith("UNSUPPORTED_VERSION"):
            return f"it speaks another version of {PROTOCOL_ID}: {message}"
        return message

    async def _watch_peers(self) -> None:
        """Track workers: who joined, who left, who went silent."""
        host = self.node.host
        timeout = self.options.peer_timeout
        while True:
            now = trio.current_time()
            connected = set(self.node.connected_peers())
            for peer in connected:
                record = self.scheduler.peers.get(peer)
                if record is not None and record.online:
                    continue
                if PROTOCOL_ID in protocols_of(host, peer):
                    self.scheduler.add_peer(peer)
                    self._last_seen[peer] = now
                    log.info("worker %s joined", peer)
                    if self._nursery is not None:
                        self._nursery.start_soon(self.node.introduce, peer)
                    self._signal()
            for record in list(self.scheduler.peers.values()):
                if not record.online:
                    continue
                if record.peer not in connected:
                    record.online = False
                    self._peer_lost(record.peer, "peer disconnected")
                elif record.in_flight and now - self._last_seen.get(record.peer, now) > timeout \
                        and self._awaiting_answers(record.peer):
                    self._peer_lost(record.peer, f"no heartbeat for {timeout:g}s")
            await trio.sleep(0.2)

    def _attempts_of(self, peer: Any) -> list[Attempt]:
        """Every attempt a peer is running now, in any phase."""
        return [a for running in self.scheduler.running_attempts.values()
                for _, a in running.values() if a.peer == peer]

    def _awaiting_answers(self, peer: Any) -> list[Attempt]:
        """Attempts the peer has not answered yet.

        An answered attempt stays running while the master fetches its
        output, but the peer owes nothing more on it (and sends no more
        heartbeats for it): its silence then is not a failure.
        """
        return [a for a in self._attempts_of(peer) if not a.aborted]

    def _peer_lost(self, peer: Any, reason: str) -> None:
        """A dead or silent peer: every task it still owes goes back to idle."""
        attempts = self._awaiting_answers(peer)
        if attempts:
            log.warning("peer %s lost (%s); %d task(s) return to idle", peer, reason,
                        len(attempts))
            self._charge(peer, reason)
        for attempt in attempts:
            attempt.abort("lost", reason)
        self._last_seen[peer] = trio.current_time()
        self._signal()

    def _exclude_liar(self, peer: Any, task: Task) -> None:
        """A peer whose result disagreed with the verified majority."""
        self._exclude(peer, f"its result for {task.phase} task {task.index} disagreed with "
                      f"{self.options.verify} other peer(s)")

    def _exclude(self, peer: Any, reason: str) -> None:
        """Take a peer out of the job at once, with everything it still owes."""
        self.scheduler.exclude(peer, reason)
        self._act_on_exclusions()

    def _act_on_exclusions(self) -> None:
        for record in self.scheduler.take_exclusions():
            log.warning("excluding peer %s from this job: %s", record.peer,
                        record.excluded_reason)
            for attempt in self._attempts_of(record.peer):
                attempt.abort("lost", "its peer was excluded")
            self._signal()

    def _charge(self, peer: Any, reason: str) -> None:
        """Count one failure event against a peer.

        Every event counts: a peer that fails fast gets no free retries. One
        event is one charge however many tasks it took down: a peer that dies
        or falls silent holding five streams has failed once, not five times.
        So a failure counts only if the peer has been heard from (a frame, or
        a new assignment to it) since it was last charged; otherwise it is
        the same event seen again, on another stream.
        """
        now = trio.current_time()
        if self._last_heard.get(peer, -math.inf) <= self._last_charged.get(peer, -math.inf):
            return
        self._last_charged[peer] = now
        self.scheduler.peer_failed(peer, now, reason=reason)
        self._act_on_exclusions()

    # -- talking to a peer ----------------------------------------------------------------

    def _job_spec(self) -> pb.JobSpec:
        assert self.job_cid is not None and self.code_cid is not None
        return pb.JobSpec(job=bytes(self.job_cid), code=bytes(self.code_cid),
                          reducers=self.reducers, encoding=self.options.encoding,
                          cid_version=self.options.cid_version)

    def _task_id(self, task: Task, attempt: Attempt) -> pb.TaskId:
        assert self.job_cid is not None
        return pb.TaskId(job=bytes(self.job_cid), phase=pb.MAP if task.phase == MAP else pb.REDUCE,
                         index=task.index, attempt=attempt.number)

    def _assignment_frame(self, items: list[tuple[Task, Attempt]]) -> pb.Frame:
        assignment = pb.Assignment(job=self._job_spec(),
                                   heartbeat_ms=int(self.options.heartbeat_interval * 1000),
                                   providers=[self.node.peer_id.to_bytes()])
        for task, attempt in items:
            task_id = self._task_id(task, attempt)
            payload = task.payload
            if isinstance(payload, SplitPayload):
                assignment.maps.append(pb.MapTask(id=task_id, split=pb.Split(
                    block=bytes(payload.cid), path=payload.path, offset=payload.offset,
                    size=payload.size, first=payload.first, last=payload.last)))
            elif isinstance(payload, BoundaryPayload):
                assert payload.records is not None
                assignment.maps.append(pb.MapTask(id=task_id, records=bytes(payload.records)))
            else:
                partition, inputs, inputs_list = payload
                reduce = pb.ReduceTask(id=task_id, partition=partition)
                if inputs_list is not None:
                    reduce.inputs_list = bytes(inputs_list)
                else:
                    reduce.inputs.extend(bytes(c) for c in inputs)
                assignment.reduces.append(reduce)
        return pb.Frame(assignment=assignment)

    async def _run_assignment(self, phase: str, peer: Any,
                              items: list[tuple[Task, Attempt]]) -> None:
        """One stream, several tasks: send them, then take each answer as it comes.

        Every read has the heartbeat deadline. An attempt can be stopped on
        its own (a backup won, or it ran too long): it is dropped from the
        stream with a Cancel naming it. If the stream fails, every task
        still pending on it fails.
        """
        pending: dict[int, tuple[Task, Attempt]] = {t.index: (t, a) for t, a in items}
        self._last_seen[peer] = self._last_heard[peer] = trio.current_time()
        stream = None
        writer: FrameWriter | None = None
        failure: _AttemptFailed | None = None
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                def make_abort(task: Task, attempt: Attempt) -> Callable[[str, str], None]:
                    def abort(kind: str, reason: str) -> None:
                        if pending.pop(task.index, None) is None:
                            return
                        if kind == "superseded":
                            self.scheduler.fail(task, attempt, FailureKind.CANCELLED, reason)
                            if not attempt.backup:
                                # A straggler that lost to its backup: it holds
                                # tasks without finishing them, so it earns less.
                                self.scheduler.peer_slow(attempt.peer)
                        else:
                            # Lost with its peer, or timed out: whoever aborts
                            # charges the peer, once for the whole event.
                            self._attempt_failed(task, attempt, _AttemptFailed(
                                FailureKind.INFRA, reason), charge=False)
                        if writer is not None:
                            nursery.start_soon(self._send_cancel, writer, task, attempt, reason)
                        if not pending:
                            scope.cancel()
                    return abort

                for task, attempt in items:
                    attempt.arm(make_abort(task, attempt))
                try:
                    with trio.fail_after(self.options.connect_timeout):
                        stream = await self.node.host.new_stream(peer, [PROTOCOL_ID])
                except Exception as exc:
                    # Unreachable: if the peer is gone (or going), the tasks
                    # never reached it and nobody is charged. A peer still
                    # connected that will not take a stream is at fault.
                    connected = self.node.is_connected(peer)
                    failure = _AttemptFailed(FailureKind.UNREACHABLE,
                                             f"cannot open a task stream: {exc}",
                                             blame=connected)
                    if not connected:
                        record = self.scheduler.peers.get(peer)
                        if record is not None:
                            record.online = False
                else:
                    reader = FrameReader(stream)
                    writer = FrameWriter(stream, timeout=self.options.connect_timeout)
                    try:
                        # Only what is still pending: an attempt may have been
                        # superseded while the stream opened.
                        await writer.write(self._assignment_frame(list(pending.values())))
                        await self._read_answers(peer, reader, pending, nursery)
                    except ProtocolError as exc:
                        failure = _AttemptFailed(FailureKind.INFRA, f"task stream failed: {exc}")
                    except _AttemptFailed as exc:
                        failure = exc
            if pending:
                abandoned = failure or _AttemptFailed(FailureKind.INFRA, "assignment abandoned",
                                                      blame=False)
                for task, attempt in list(pending.values()):
                    pending.pop(task.index, None)
                    attempt.aborted = True
                    self._attempt_failed(task, attempt, abandoned, charge=False)
                self._charge_for(peer, abandoned)  # one stream, one failure
        if stream is not None:
            with trio.CancelScope(shield=True):
                await close_quietly(stream, reset=failure is not None)
        self._signal()

    async def _read_answers(self, peer: Any, reader: FrameReader,
                            pending: dict[int, tuple[Task, Attempt]],
                            nursery: trio.Nursery) -> None:
        while pending:
            frame = await reader.read(self.options.peer_timeout)
            now = trio.current_time()
            self._last_seen[peer] = self._last_heard[peer] = now
            if frame is None:
                raise _AttemptFailed(FailureKind.INFRA, "peer closed the stream without results")
            kind, message = body(frame)
            if kind == "accepted":
                continue
            if kind == "progress":
                for index in message.running:
                    entry = pending.get(index)
                    if entry is not None and entry[1].running_since is None:
                        self.scheduler.running(entry[1], now)
                continue
            if kind not in ("map_result", "reduce_result", "error"):
                raise _AttemptFailed(FailureKind.INFRA, f"peer sent {kind or 'garbage'}")
            if kind == "error" and not message.HasField("id"):
                failure, blame, exclude = _classify(message.code)
                raise _AttemptFailed(failure, f"{error_code_name(message.code)}: "
                                     f"{message.message}", message.traceback, blame=blame,
                                     exclude=exclude)
            entry = pending.get(message.id.index)
            if entry is None:
                continue  # an answer for a task we cancelled
            task, attempt = entry
            if message.id.attempt != attempt.number or \
                    ((kind == "map_result") != (task.phase == MAP) and kind != "error"):
                # Still pending: the caller fails it with the rest of the stream.
                raise _AttemptFailed(FailureKind.INFRA, "peer answered for the wrong task")
            del pending[message.id.index]
            attempt.aborted = True  # answered: no longer abortable through the stream
            nursery.start_soon(self._finish, task, attempt, kind, message)

    async def _send_cancel(self, writer: FrameWriter, task: Task, attempt: Attempt,
                           reason: str) -> None:
        cancel = pb.Cancel(reason=reason, id=self._task_id(task, attempt))
        with trio.move_on_after(2):
            try:
                await writer.write(pb.Frame(cancel=cancel))
            except ProtocolError:
                pass

    async def _take_inline(self, blocks: Any) -> None:
        """Store blocks sent with a result, each checked against its CID first."""
        checked: list[tuple[CID, bytes]] = []
        for block in blocks:
            try:
                cid = CID.from_bytes(block.cid)
            except CIDError as exc:
                raise _AttemptFailed(FailureKind.INFRA, f"peer sent a bad CID: {exc}") from None
            if not cid.verify(block.data):
                raise _AttemptFailed(FailureKind.INFRA, f"peer sent bytes that are not {cid}")
            checked.append((cid, bytes(block.data)))
        await self.node.blocks.put_many(checked)

    async def _replicate(self, cid: CID, peer: Any) -> None:
        try:
            await fetch_dag(Fetcher(self.node.blocks, self.options.fetch_timeout, [peer]), cid,
                            timeout=self.options.fetch_timeout)
        except BlockNotFound as exc:
            raise _AttemptFailed(FailureKind.INFRA, f"could not fetch the output {cid} from "
                                 f"the peer: {exc}") from None
        except P2PMRError as exc:
            raise _AttemptFailed(FailureKind.INFRA, f"output {cid} is malformed: {exc}") from None

    async def _accept_map(self, task: Task, result: Any, peer: Any) -> MapOutput:
        if len(result.partitions) != self.reducers or \
                len(result.partition_records) != self.reducers:
            raise _AttemptFailed(FailureKind.INFRA, f"peer returned {len(result.partitions)} "
                                 f"partitions for {self.reducers} reducers")
        try:
            partitions = [CID.from_bytes(raw) if raw else None for raw in result.partitions]
        except CIDError as exc:
            raise _AttemptFailed(FailureKind.INFRA, f"peer returned a bad CID: {exc}") from None
        await self._take_inline(result.blocks)
        with collapsed():
            async with trio.open_nursery() as nursery:
                for cid in partitions:
                    if cid is not None:
                        nursery.start_soon(self._replicate, cid, peer)
        output = MapOutput(partitions, list(result.partition_records), result.records_in,
                           result.records_out, timings=_peer_timings(result))
        payload = task.payload
        if isinstance(payload, SplitPayload):
            edges = BlockEdges(result.head.length, result.tail.length, result.no_newline)
            if edges.head > payload.size or edges.tail > payload.size or \
                    (edges.no_newline and edges.head != payload.size):
                raise _AttemptFailed(FailureKind.INFRA, "peer returned impossible fragments")
            output.edges = edges
            output.head = bytes(result.head.data) if result.head.inline else None
            output.tail = bytes(result.tail.data) if result.tail.inline else None
            if (output.head is not None and len(output.head) != edges.head) or \
                    (output.tail is not None and len(output.tail) != edges.tail):
                raise _AttemptFailed(FailureKind.INFRA, "peer returned inconsistent fragments")
        return output

    async def _accept_reduce(self, result: Any, peer: Any) -> ReduceOutput:
        try:
            cid = CID.from_bytes(result.output)
        except CIDError as exc:
            raise _AttemptFailed(FailureKind.INFRA, f"peer returned a bad CID: {exc}") from None
        await self._take_inline(result.blocks)
        await self._replicate(cid, peer)
        return ReduceOutput(cid, result.records_in, result.keys, result.records_out,
                            result.bytes, timings=_peer_timings(result))

    # -- completion bookkeeping ---------------------------------------------------------------

    async def _completed(self, task: Task) -> None:
        """Journal a completed task and unlock what depends on it.

        A phase counts as finished only once this has run for all its tasks
        (``_settling``), so nothing after it acts on a completion that is
        not yet durable.
        """
        self._settling += 1
        try:
            output = task.output
            extra: dict[str, Any] = {}
            if isinstance(task.payload, BoundaryPayload) and task.payload.records is not None:
                extra["records"] = str(task.payload.records)
            if self._journal is not None:
                await self._journal.append({"t": "done", "phase": task.phase,
                                            "index": task.index,
                                            "output": _output_to_json(output), **extra})
            if task.phase == MAP and isinstance(task.payload, SplitPayload):
                await self._note_split(task, output)
                await self._update_boundaries(task.payload.file)
        finally:
            self._settling -= 1
            self._signal()

    async def _note_split(self, task: Task, output: MapOutput) -> None:
        """Record a split's edge fragments for stitching.

        ``edges`` is what marks the split as known to :meth:`_update_boundaries`,
        so it is set only after the fragments are in hand: a long fragment is
        read from the block, and while that read waits another completion may
        stitch the boundaries around this split.
        """
        payload = task.payload
        assert isinstance(payload, SplitPayload) and output.edges is not None
        info = self._split_info[task.index]
        head, tail = output.head, output.tail
        if (output.edges.head and head is None) or (output.edges.tail and tail is None):
            # Long fragments are not sent inline: read them from the block.
            providers = [task.completed_by] if task.completed_by is not None else []
            try:
                block = await Fetcher(self.node.blocks, self.options.fetch_timeout,
                                        providers).get(payload.cid)
                data = unixfs.extract_data(payload.cid, block)
            except (BlockNotFound, UnixFSError) as exc:
                raise JobFailed(f"cannot read the input block {payload.cid}: {exc}") from None
            if head is None:
                head = data[:output.edges.head]
            if tail is None:
                tail = data[len(data) - output.edges.tail:]
        info.head, info.tail = head, tail
        info.edges = output.edges

    async def _update_boundaries(self, file_index: int) -> None:
        """Make boundary tasks ready once every split they depend on is done.

        Each file keeps how many of its splits are done from the start (the
        prefix only grows) and which boundary group comes next, so a
        completion costs work in proportion to what it unlocks.
        """
        splits = self._splits[file_index]
        map_tasks = self.scheduler.phase_tasks(MAP)
        done = self._prefix[file_index]
        while done < len(splits) and map_tasks[splits[done]].state is State.COMPLETED \
                and self._split_info[splits[done]].edges is not None:
            done += 1
        self._prefix[file_index] = done
        bounds = self._boundaries[file_index]
        while self._next_group[file_index] < len(bounds):
            task = map_tasks[bounds[self._next_group[file_index]]]
            payload = task.payload
            assert isinstance(payload, BoundaryPayload)
            if done <= payload.last_split:
                return
            self._next_group[file_index] += 1
            if task.ready or payload.building:
                continue
            payload.building = True
            if payload.records is None:
                payload.records = await self._boundary_records(file_index, payload)
            self.scheduler.mark_ready(task)
            self._signal()

    async def _boundary_records(self, file_index: int, payload: BoundaryPayload) -> CID:
        """Stitch and store the lines that end in this group's boundaries.

        Stitching starts at the last split before the group that has a
        newline: a line can only reach back that far.
        """
        splits = self._splits[file_index]
        start = payload.first_split
        while start > 0:
            edges = self._split_info[splits[start]].edges
            if edges is None or not edges.no_newline:
                break
            start -= 1
        infos = [self._split_info[i] for i in splits[start:payload.last_split + 1]]
        lines = [line for line in stitch_file(infos, partial=True)
                 if payload.first_split < line[3] + start <= payload.last_split]
        path = self.files[file_index][0]
        data = encode_records((path, off, raw, term) for off, raw, term, _ in lines)
        opts = unixfs.ImportOptions(cid_version=self.options.cid_version)
        return await unixfs.add_bytes(self.node.blocks, data, opts)

    def _plan_reduce(self) -> None:
        if self.scheduler.phase_tasks(REDUCE):
            return
        map_outputs = [t.output for t in self.scheduler.phase_tasks(MAP)]
        tasks = []
        for r in range(self.reducers):
            inputs = [out.partitions[r] for out in map_outputs
                      if out is not None and out.partitions[r] is not None]
            tasks.append(Task(REDUCE, r, (r, inputs, None)))
        self.scheduler.add_tasks(REDUCE, tasks)

    async def _prepare_reduce_lists(self) -> None:
        for task in self.scheduler.phase_tasks(REDUCE):
            partition, inputs, listing = task.payload
            if listing is None and len(inputs) > _INLINE_INPUTS:
                data = msgpack.packb([bytes(c) for c in inputs], use_bin_type=True)
                listing = await unixfs.add_bytes(self.node.blocks, data)
                task.payload = (partition, inputs, listing)

    # -- output --------------------------------------------------------------------------------

    async def _dag_size(self, cid: CID) -> int:
        total = 0
        stack = [cid]
        while stack:
            current = stack.pop()
            block = await self.node.blocks.get(current, timeout=self.options.fetch_timeout)
            total += len(block)
            stack.extend(dag_links(current, block))
        return total

    async def _assemble(self) -> CID:
        start = time.monotonic()
        reduce_tasks = self.scheduler.phase_tasks(REDUCE)
        map_tasks = self.scheduler.phase_tasks(MAP)
        entries: list[tuple[str, CID, int]] = []
        parts = []
        for task in reduce_tasks:
            out: ReduceOutput = task.output
            name = f"part-{task.index:05d}"
            entries.append((name, out.cid, await self._dag_size(out.cid)))
            parts.append({"name": name, "cid": str(out.cid), "bytes": out.size,
                          "records": out.records_out})
        map_outputs: list[MapOutput] = [t.output for t in map_tasks]
        assert self.job_cid is not None and self.code_cid is not None
        self.manifest = {
            "p2pmr": 1,
            "job": str(self.job_cid),
            "code": str(self.code_cid),
            "input": str(self.input),
            "reducers": self.reducers,
            "encoding": self.options.encoding,
            "counts": {
                **self.manifest_counts,
                "map_tasks": len(map_tasks),
                "map_records_in": sum(o.records_in for o in map_outputs),
                "map_records_out": sum(o.records_out for o in map_outputs),
                "reduce_records_in": sum(t.output.records_in for t in reduce_tasks),
                "reduce_keys": sum(t.output.keys for t in reduce_tasks),
                "reduce_records_out": sum(t.output.records_out for t in reduce_tasks),
            },
            "parts": parts,
        }
        manifest = json.dumps(self.manifest, indent=2, sort_keys=True).encode() + b"\n"
        opts = unixfs.ImportOptions(cid_version=self.options.cid_version)
        manifest_cid = await unixfs.add_bytes(self.node.blocks, manifest, opts)
        entries.append(("_manifest.json", manifest_cid, await self._dag_size(manifest_cid)))
        root, block, _ = unixfs.build_directory(entries, self.options.cid_version)
        await self.node.blocks.put(root, block)
        await self.node.blocks.pin(root, recursive=True, timeout=self.options.fetch_timeout)
        self.timings["assemble"] = time.monotonic() - start
        if self._journal is not None:
            await self._journal.append({"t": "output", "cid": str(root),
                                        "timings": self.timings})
        return root


def _signature(output: MapOutput | ReduceOutput) -> Any:
    """What two correct runs of a task must agree on, byte for byte."""
    if isinstance(output, ReduceOutput):
        return ("reduce", output.cid)
    edges = output.edges
    return ("map", tuple(output.partitions), tuple(output.partition_records),
            (edges.head, edges.tail, edges.no_newline) if edges else None,
            output.head, output.tail, output.records_in, output.records_out)


def _output_to_json(output: MapOutput | ReduceOutput) -> dict[str, Any]:
    if isinstance(output, ReduceOutput):
        return {"cid": str(output.cid), "records_in": output.records_in, "keys": output.keys,
                "records_out": output.records_out, "size": output.size}
    doc: dict[str, Any] = {
        "partitions": [str(c) if c else None for c in output.partitions],
        "partition_records": output.partition_records,
        "records_in": output.records_in, "records_out": output.records_out}
    if output.edges is not None:
        doc["edges"] = [output.edges.head, output.edges.tail, output.edges.no_newline]
        doc["head"] = output.head.hex() if output.head is not None else None
        doc["tail"] = output.tail.hex() if output.tail is not None else None
    return doc


def _output_from_json(phase: str, doc: dict[str, Any]) -> MapOutput | ReduceOutput:
    if phase == REDUCE:
        return ReduceOutput(CID.parse(doc["cid"]), doc["records_in"], doc["keys"],
                            doc["records_out"], doc["size"])
    output = MapOutput([CID.parse(c) if c else None for c in doc["partitions"]],
                       doc["partition_records"], doc["records_in"], doc["records_out"])
    if "edges" in doc:
        head, tail, no_newline = doc["edges"]
        output.edges = BlockEdges(head, tail, bool(no_newline))
        output.head = bytes.fromhex(doc["head"]) if doc.get("head") is not None else None
        output.tail = bytes.fromhex(doc["tail"]) if doc.get("tail") is not None else None
    return output


def InitMaster(node: Node, data_cid: CID | str, map_fn: Any = None,
               reduce_fn: Any = None, n_reducers: int = 1, *,
               combine_fn: Callable[..., Any] | None = None, job: Any = None,
               options: MasterOptions | None = None, **option_overrides: Any) -> Master:
    """Create a master for one job.

    Either pass the functions, ``InitMaster(node, cid, map_fn, reduce_fn, R)``,
    or a job (a :class:`Job`, a module, or an object with ``map``/``reduce``):
    ``InitMaster(node, cid, job, R)`` or ``InitMaster(node, cid, job=job,
    n_reducers=R)``. Keyword options override :class:`MasterOptions` fields.
    """
    if job is None and is_job_like(map_fn):
        job, map_fn = map_fn, None
        if isinstance(reduce_fn, int):
            n_reducers, reduce_fn = reduce_fn, None
    if job is not None:
        if map_fn is not None or reduce_fn is not None:
            raise JobError("pass either a job or map/reduce functions, not both")
        the_job = Job.from_object(job)
    else:
        if map_fn is None or reduce_fn is None:
            raise JobError("InitMaster needs map and reduce functions, or a job")
        the_job = Job(reduce=reduce_fn, map=map_fn, combine=combine_fn,
                      name=getattr(map_fn, "__module__", "job") or "job")
    if option_overrides:
        base = options or MasterOptions()
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        unknown = set(option_overrides) - set(fields)
        if unknown:
            raise TypeError(f"unknown master option(s): {', '.join(sorted(unknown))}")
        fields.update(option_overrides)
        options = MasterOptions(**fields)
    return Master(node, data_cid, the_job, n_reducers, options)

