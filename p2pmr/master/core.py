"""The master of one job: its run loop, its dispatch policy, its status API.

Everything else is done by the parts in this package, each with one job:
:mod:`.plan` (splits and tasks), :mod:`.boundaries` (lines across blocks),
:mod:`.assignments` and :mod:`.client` (carrying tasks to peers),
:mod:`.results` (checking answers), :mod:`.liveness` (who is working, and
what their failures cost them), :mod:`.resume` and :mod:`.journal`
(durability), :mod:`.intermediates` (where map outputs live, and rerunning
lost ones), :mod:`.assembly` (the output directory).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, overload

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import JobError, JobFailed, LimitExceeded, NotAuthorised, RemoteTaskError, collapsed
from ..job import Job, JobDescriptor, dump_job, is_job_like, runtime
from ..node import Node
from ..partition import TotalOrder
from ..records import SplitInfo
from ..storage import unixfs
from ..storage.cid import CID
from ..wire.codes import ErrorCode
from ..wire.framing import PROTOCOL_ID
from ..wire.messages import JobSpec
from .assembly import assemble
from .assignments import Assignments
from .boundaries import Boundaries
from .events import EventLog
from .intermediates import Intermediates
from .journal import FoundJournal, Journal, output_to_json
from .liveness import PeerWatch
from .locality import Locality
from .memo import JobFacts, Memo, Reuse, task_counts
from .options import MasterOptions
from .outputs import MapOutput, ReduceOutput
from .peerbook import PeerStatus
from .plan import (
    MAP,
    REDUCE,
    BoundaryWork,
    InputPlan,
    plan_input,
    plan_reduce,
    store_input_lists,
)
from .policy import Policy
from .repair import check_inputs
from .results import Results
from .resume import find_resumable, finished_output, replay, warn_if_code_changed
from .sampling import sample_boundaries
from .scheduler import Abort, Attempt, PhaseStatus, Scheduler, Task, TaskInfo, backup_candidate

__all__ = ["InitMaster", "Master"]

log = logging.getLogger(__name__)

Pairs = Iterable[tuple[Any, Any]]


class Master:
    """One MapReduce job. Create with :func:`InitMaster`, then ``await run()``."""

    def __init__(self, node: Node, data_cid: CID | str, job: Job | None, n_reducers: int,
                 options: MasterOptions | None = None, *, code: bytes | None = None,
                 name: str | None = None, total_order: TotalOrder | None = None,
                 record_keys: bool | None = None) -> None:
        if not isinstance(n_reducers, int) or n_reducers < 1:
            raise JobError(f"n_reducers must be a positive integer, not {n_reducers!r}")
        self.node = node
        self.input = CID.parse(data_cid)
        self.job = job
        self.code = code
        # The job's TotalOrder, if any: the input is sampled before the map
        # phase. Given apart for code the master holds only as bytes.
        self.total_order = total_order or (
            job.partition if job is not None and isinstance(job.partition, TotalOrder) else None)
        self.name = name or (job.name if job is not None else "job")
        self.record_keys = record_keys if record_keys is not None else not job or job.record_keys
        self.reducers = n_reducers
        self.options = options or MasterOptions()
        policy = self.options.policy
        if self.options.no_backups:
            policy = dataclasses.replace(policy, backups=False)
        if self.options.verify > 1:
            policy = dataclasses.replace(
                policy, verify=self.options.verify,
                max_attempts_running=max(policy.max_attempts_running, self.options.verify + 1))
        self.events = EventLog()  # what happened to each task and peer, for people
        self.scheduler = Scheduler(policy, self.events)
        self.phase = "planning"  # then "map", "reduce", "assembling", "done" or "failed"
        self.job_cid: CID | None = None
        self.code_cid: CID | None = None
        self.output: CID | None = None
        self.manifest: dict[str, Any] = {}
        self.manifest_counts: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.resumed_tasks = 0
        self.gate: float | None = 0.0 if self.options.min_peers else None  # --min-peers
        self.plan: InputPlan | None = None
        self._boundaries: Boundaries | None = None
        self.locality: Locality | None = None  # who holds which splits, once planned
        self._journal: Journal | None = None
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._fatal: JobFailed | None = None
        self._settling = 0  # completions still being journaled and unlocked
        self.watch = PeerWatch(node.network, self.scheduler,
                               peer_timeout=self.options.peer_timeout, changed=self._signal)
        self._assignments: Assignments | None = None  # once the job is stored
        self._intermediates: Intermediates | None = None  # once running
        self.facts: JobFacts | None = None  # what decides output bytes, once the job is known
        self._reuse: Reuse | None = None  # the memo, once the job is known

    # -- status API ----------------------------------------------------------------

    def get_map_status(self) -> PhaseStatus:
        return self.scheduler.status(MAP)

    def get_reduce_status(self) -> PhaseStatus:
        if not self.scheduler.phase_tasks(REDUCE):
            return PhaseStatus(total=self.reducers, idle=self.reducers)
        return self.scheduler.status(REDUCE)

    def get_peer_status(self) -> dict[str, PeerStatus]:
        return self.scheduler.book.status()

    def get_tasks(self, phase: str = MAP) -> list[TaskInfo]:
        return self.scheduler.infos(phase)

    def task_profile(self) -> dict[str, dict[str, float]]:
        """Where task time went, per phase: wall, and fetch/queue/compute/store."""
        return {phase: profile(self.scheduler.phase_tasks(phase)) for phase in (MAP, REDUCE)}

    def task_counts(self) -> dict[str, int]:
        return task_counts(self.scheduler, self.resumed_tasks)

    @property
    def map_reruns(self) -> int:
        """Completed map tasks run again because their outputs were lost."""
        return self._intermediates.reruns if self._intermediates is not None else 0

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
        started = time.monotonic()
        try:
            with collapsed():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self.watch.watch, self._introduce)
                    await self._run()
                    nursery.cancel_scope.cancel()
        except BaseException as exc:
            self.phase = "failed"
            self.events.emit("job-failed", reason=str(exc) or type(exc).__name__)
            self.events.close()
            raise
        finally:
            if self._journal is not None:
                self._journal.close()
        self.phase = "done"
        self.timings["total"] = time.monotonic() - started
        self.events.emit("job-done", detail={"output": str(self.output), **self.task_counts()})
        self.events.close()
        log.info("job %s finished in %.2fs: %s", self.job_cid, self.timings["total"], self.output)
        assert self.output is not None
        return self.output

    def _introduce(self, peer: PeerID) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self.node.network.introduce, peer)
            if self.locality is not None and self.phase in ("planning", MAP):
                self._nursery.start_soon(self.locality.probe, [peer])

    async def _run(self) -> None:
        finished = await self._prepare()
        if finished is not None:
            self.output = finished
            # Every task, the reduces too (never planned in this process).
            self.resumed_tasks = len(self.scheduler.phase_tasks(MAP)) + self.reducers
            return
        if self.locality is not None and self._nursery is not None:
            # In the background: a peer waits for its own answer, not for all.
            self._nursery.start_soon(self.locality.probe, [
                r.peer for r in self.scheduler.book.usable() if isinstance(r.peer, PeerID)])
        for phase in (MAP, REDUCE):
            phase_start = time.monotonic()
            if phase == REDUCE:
                self._plan_reduce()
                await store_input_lists(self.scheduler.phase_tasks(REDUCE), self.node.blocks)
                assert self._intermediates is not None
                self._intermediates.rehome()
            self.phase = phase
            self.events.emit("phase", phase=phase)
            await self._run_phase(phase)
            self.timings[phase] = time.monotonic() - phase_start
        self.phase = "assembling"
        self.events.emit("phase", phase="assembling")
        started = time.monotonic()
        assert self.job_cid is not None and self.facts is not None
        self.output, self.manifest = await assemble(
            self.node.blocks, job=self.job_cid, facts=self.facts, input_cid=self.input,
            parameters={"split_size": self.options.split_size,
                        "boundary_group": self.options.boundary_group},
            map_tasks=self.scheduler.phase_tasks(MAP),
            reduce_tasks=self.scheduler.phase_tasks(REDUCE), counts=self.manifest_counts,
            timeout=self.options.fetch_timeout)
        self.timings["assemble"] = time.monotonic() - started
        if self._journal is not None:
            await self._journal.append({"t": "output", "cid": str(self.output),
                                        "timings": self.timings})

    async def _prepare(self) -> CID | None:
        """Store the job, plan it, and resume it; the output if it had finished."""
        start = time.monotonic()
        blocks = self.node.blocks
        journals = self.node.repo / "jobs"
        found, code = await _resume_or_start(self, journals)
        descriptor = found.descriptor if found is not None else None
        self.plan = await plan_input(blocks, self.input, timeout=self.options.input_timeout,
                                     boundary_group=self.options.boundary_group,
                                     split_size=self.options.split_size)
        if descriptor is None:
            assert code is not None
            descriptor = await _describe(self, code, self.plan)
        self.code_cid = descriptor.code
        self.job_cid = await unixfs.add_bytes(
            blocks, descriptor.to_json(), unixfs.ImportOptions(cid_version=descriptor.cid_version))
        self._intermediates = Intermediates(self.scheduler, self.node.network, blocks,
                                            self.options, charge=self.watch.charge)
        self._assignments = Assignments(
            self.watch, self.scheduler,
            Results(blocks, self.reducers, self.options.fetch_timeout,
                    keep_map_outputs=self.options.replicas > 1),
            self._intermediates, self.options,
            JobSpec(self.job_cid, self.code_cid, self.reducers, self.options.encoding,
                    self.options.cid_version, runtime(), descriptor.boundaries),
            completed=self._completed, input_failed=self._input_failed, changed=self._signal)
        self.scheduler.add_tasks(MAP, self.plan.tasks)
        self.locality = Locality(self.plan.tasks, blocks, self.scheduler.takeable, self._signal,
                                 wait=self.options.locality_wait,
                                 probe_timeout=min(2.0, self.options.fetch_timeout))
        self.scheduler.place(MAP, self.locality)
        self._assignments.holders = self.locality.holders
        self.manifest_counts = self.plan.counts()
        log.info("job %s: %d file(s), %d split(s), %d boundary task(s), %d reducer(s)",
                 self.job_cid, self.manifest_counts["files"], self.manifest_counts["splits"],
                 self.manifest_counts["boundary_tasks"], self.reducers)
        self.events.emit("job-planned", detail={
            "job": str(self.job_cid), "input": str(self.input), "name": self.name,
            "map_tasks": len(self.plan.tasks), "reducers": self.reducers,
            "input_bytes": self.plan.total_size(), "master": str(self.node.peer_id)})
        self._boundaries = Boundaries(self.plan, self.scheduler, blocks,
                                      cid_version=self.options.cid_version,
                                      fetch_timeout=self.options.fetch_timeout)
        finished = None
        if self.options.journal:
            self._journal = Journal.open(journals, self.job_cid, descriptor, fresh=found is None)
            self.events.attach(self._journal.path.parent / "events.jsonl")
            finished = await finished_output(blocks, self._journal.records)
            if finished is None:
                self.resumed_tasks = await replay(
                    self._journal.records, self.scheduler, blocks,
                    plan_reduce=self._plan_reduce, note_split=self._boundaries.note)
                await self._boundaries.update_all()
                self._intermediates.note_all()
            else:
                log.info("job %s had already finished: %s", self.job_cid, finished)
        self.facts = JobFacts(descriptor.code, self.reducers, self.options.encoding,
                              self.options.cid_version, runtime(), descriptor.boundaries,
                              descriptor.record_keys)
        if finished is None and self.options.memo:
            self._reuse = Reuse(
                Memo(self.node.repo / "memo"), self.facts, self.scheduler, blocks,
                job=self.job_cid, agreed=self.scheduler.policy.verify,
                fresh=self.options.fresh, completed=self._completed)
            while await self._reuse.sweep(MAP):  # a split taken may let boundaries go
                pass
        self.timings["plan"] = time.monotonic() - start
        return finished

    def _plan_reduce(self) -> None:
        if not self.scheduler.phase_tasks(REDUCE):
            self.scheduler.add_tasks(REDUCE, plan_reduce(self.scheduler.phase_tasks(MAP),
                                                         self.reducers))

    # -- the phase loop ---------------------------------------------------------------

    async def _run_phase(self, phase: str) -> None:
        """Run one phase to its end. In the reduce phase, map tasks whose
        outputs were lost run again alongside (spec section 7)."""
        sched = self.scheduler
        phases = (MAP, REDUCE) if phase == REDUCE else (MAP,)
        no_worker_since: float | None = None
        stalled_since: float | None = None
        while True:
            if self._fatal is not None:
                raise self._fatal
            for each in phases:
                failed = sched.failed_task(each)
                if failed is not None:
                    raise _task_failure(failed, sched.policy)
            if sched.phase_done(phase) and not self._settling:
                return
            if self._reuse is not None and any([await self._reuse.sweep(p) for p in phases]):
                continue  # what was taken may finish the phase, or ready more
            assert self._intermediates is not None
            self._intermediates.sweep()
            now = trio.current_time()
            assigned = 0
            for each in phases:
                _enforce_task_timeouts(self, each, now)
                assigned += _dispatch(self, each, now)
            usable = sched.book.usable()
            cooling = any(r.not_before > now for r in usable)
            running = any(sched.any_running(each) for each in phases)
            if assigned or running or cooling or self._settling or not usable:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = now
            elif now - stalled_since > self.options.wait_for_workers:
                stuck = sched.next_idle(phase)
                which = f"{phase} task {stuck.index}" if stuck else f"the {phase} phase"
                raise JobFailed(
                    f"no usable peer can take {which} for {self.options.wait_for_workers:g}s "
                    f"({len(usable)} usable; verify={self.options.verify} needs "
                    f"that many distinct peers)")
            if usable:
                no_worker_since = None
            elif no_worker_since is None:
                no_worker_since = now
                log.info("waiting for workers (peers that speak %s)", PROTOCOL_ID)
            elif now - no_worker_since > self.options.wait_for_workers or (
                    sched.book.records and all(r.excluded for r in sched.book.records.values())
                    and now - no_worker_since > min(self.options.wait_for_workers, 10.0)):
                # Excluded peers stay excluded for the job, so once every peer
                # seen is, only a newcomer could help: a trust mistake must
                # cost seconds, not wait_for_workers.
                raise _no_worker(sched, self.node.peer_id, now - no_worker_since)
            with trio.move_on_after(0.25):
                await self._wake.wait()

    # -- completions ------------------------------------------------------------------

    async def _completed(self, task: Task) -> None:
        """Journal a completed task and unlock what depends on it.

        A phase counts as finished only once this has run for all its tasks
        (``_settling``), so nothing after it acts on a completion that is
        not yet durable.
        """
        self._settling += 1
        try:
            if self._journal is not None:
                extra: dict[str, Any] = {}
                if isinstance(task.payload, BoundaryWork) and task.payload.records is not None:
                    extra["records"] = str(task.payload.records)
                if task.completed_by is not None:  # who produced it, for `p2pmr verify`
                    extra["by"] = str(task.completed_by)
                output = task.output
                assert isinstance(output, (MapOutput, ReduceOutput))
                await self._journal.append({"t": "done", "phase": task.phase,
                                            "index": task.index,
                                            "output": output_to_json(output), **extra})
            if self._reuse is not None:
                await self._reuse.record(task)
            if isinstance(task.payload, SplitInfo):
                assert self._boundaries is not None
                if self.locality is not None and task.completed_by is not None:
                    self.locality.completed(task, task.completed_by)
                await self._boundaries.split_done(task)
            if task.phase == MAP and self._intermediates is not None:
                self._intermediates.note(task)
        finally:
            self._settling -= 1
            self._signal()

    def _input_failed(self, task: Task) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._check_corruption, task)

    async def _check_corruption(self, task: Task) -> None:
        failure = await check_inputs(self.node.blocks, task, self.code_cid,
                                     self.node.repo, self.options.fetch_timeout)
        if failure is not None:
            self._fatal = failure
            self._signal()


async def _resume_or_start(master: Master, journals: Path
                           ) -> tuple[FoundJournal | None, bytes | None]:
    """The journaled run to resume (its settings then hold), and the job's code."""
    options, blocks = master.options, master.node.blocks
    found = find_resumable(journals, job=options.resume_job, input_cid=master.input,
                           reducers=master.reducers, name=master.name) \
        if options.resume else None
    code = master.code
    if found is not None:
        descriptor = found.descriptor
        if code is None and master.job is not None:
            code = dump_job(master.job)
        warn_if_code_changed(code, descriptor)
        for kept, what in ((descriptor.code, "job code"),
                           (descriptor.boundaries, "partition boundaries")):
            if kept is not None and await blocks.missing(kept):
                raise JobFailed(f"cannot resume: the {what} {kept} is gone")
        # The journaled run's settings decide what its journaled outputs
        # mean: its encoding, CID version and boundary grouping hold.
        master.input, master.reducers, master.name, master.record_keys = \
            descriptor.input, descriptor.reducers, descriptor.name, descriptor.record_keys
        master.options = dataclasses.replace(
            options, encoding=descriptor.encoding, cid_version=descriptor.cid_version,
            boundary_group=descriptor.boundary_group, split_size=descriptor.split_size)
        log.info("resuming job %s from its journal", found.job)
    elif code is None:
        if master.job is None:
            raise JobError("no job to run and no unfinished job to resume")
        code = dump_job(master.job)
    return found, code


async def _describe(master: Master, code: bytes, plan: InputPlan) -> JobDescriptor:
    """A new run's descriptor: the code stored, the boundaries sampled if need be."""
    options, blocks = master.options, master.node.blocks
    code_cid = await unixfs.add_bytes(blocks, code,
                                      unixfs.ImportOptions(cid_version=options.cid_version))
    boundaries = None
    if master.total_order is not None:
        boundaries = await sample_boundaries(
            blocks, plan, code, code_cid, master.total_order, reducers=master.reducers,
            encoding=options.encoding, cid_version=options.cid_version,
            timeout=options.input_timeout)
    return JobDescriptor(code_cid, master.input, master.reducers, options.encoding,
                         options.cid_version, master.name, max(1, options.boundary_group),
                         max(0, options.split_size), boundaries, master.record_keys)


def _dispatch(master: Master, phase: str, now: float) -> int:
    """Give every peer with room an assignment: as many idle tasks as its
    window allows, but no more than its fair share of what is idle, so
    the last tasks of a phase are spread out rather than queued on one
    peer; or, near the end of the phase, one backup attempt."""
    sched = master.scheduler
    if master.gate is not None:  # --min-peers: none yet, unless they are late
        master.gate = master.gate or now
        if len(sched.book.usable()) < master.options.min_peers and \
                now - master.gate < master.options.wait_for_workers:
            return 0
        master.gate = None
    peers = list(sched.book.available(now))
    share = max(1, math.ceil(sched.idle_count(phase) / max(1, len(peers))))
    assigned = 0
    for record in peers:
        peer = record.peer
        assert isinstance(peer, PeerID)
        batch: list[tuple[Task, Attempt]] = []
        while record.in_flight < record.window and len(batch) < share:
            task = sched.next_idle(phase, peer)
            if task is None:
                break
            batch.append((task, sched.start(task, peer, now)))
        if not batch:
            backup = backup_candidate(sched, phase, peer, now)
            if backup is None:
                continue
            log.info("backup attempt of %s task %d on %s", phase, backup.index, peer)
            batch.append((backup, sched.start(backup, peer, now, backup=True)))
        assert master._nursery is not None and master._assignments is not None
        master._nursery.start_soon(master._assignments.run, peer, batch)
        assigned += len(batch)
    return assigned


def _enforce_task_timeouts(master: Master, phase: str, now: float) -> None:
    """Abort attempts past the task deadline: the given one, else 60 s plus
    ten times the phase's typical task. A peer is charged once, however many
    tasks it sat on."""
    sched, options = master.scheduler, master.options
    typical = sched.typical_duration(phase)
    limit = options.task_timeout if options.task_timeout is not None else (
        60.0 + 10.0 * typical if typical is not None else 600.0)
    late: set[PeerID] = set()
    for _, attempt in list(sched.running_attempts.get(phase, {}).values()):
        if sched.age(attempt, now) > limit and not attempt.aborted \
                and not attempt.abort_pending:
            attempt.abort(Abort.TIMEOUT, f"no result within {limit:.0f}s")
            assert isinstance(attempt.peer, PeerID)
            late.add(attempt.peer)
    for peer in late:
        master.watch.charge(peer, f"held tasks past the {limit:.0f}s task deadline")


def profile(tasks: list[Task]) -> dict[str, float]:
    sums = dict.fromkeys(("tasks", "wall", "fetch", "queue", "compute", "store"), 0.0)
    for task in tasks:
        output = task.output
        if task.duration is None or not isinstance(output, (MapOutput, ReduceOutput)):
            continue
        sums["tasks"] += 1
        sums["wall"] += task.duration
        for key, value in output.timings.items():
            sums[key] += value
    return {k: round(v, 3) for k, v in sums.items()}


def _task_failure(task: Task, policy: Policy) -> JobFailed:
    """The job failed with this task; as precise an error as its failures allow."""
    what = f"{task.phase} task {task.index}"
    if task.user_errors >= policy.max_user_errors:
        message = f"{what} failed {task.user_errors} times: {task.last_error}"
        if task.last_code == ErrorCode.LIMIT_EXCEEDED:
            return LimitExceeded(message, task.last_traceback)
        return RemoteTaskError(message, task.last_traceback)
    if task.input_failures >= policy.max_input_failures:
        return JobFailed(f"{what} could not fetch its input on {task.input_failures} "
                         f"attempts: {task.last_error}", task.last_traceback)
    return JobFailed(f"{what} failed {task.failures} times; last error: {task.last_error}",
                     task.last_traceback)


def _no_worker(scheduler: Scheduler, me: PeerID, waited: float) -> JobFailed:
    peers = scheduler.book.records
    excluded = [r for r in peers.values() if r.excluded]
    text = f"no usable worker for {waited:.0f}s ({len(peers)} seen, {len(excluded)} excluded)"
    if not peers:
        text += (f": no peer that speaks {PROTOCOL_ID} connected; start peers with `p2pmr peer "
                 f"--bootstrap MASTER_MULTIADDR --trust {me}` or run with --local-peers N")
    for record in excluded:
        text += f"\n  peer {record.peer} was excluded: {record.excluded_reason}"
    if excluded and all(r.untrusted for r in excluded) and len(excluded) == len(peers):
        return NotAuthorised(text)
    return JobFailed(text)


MapFn = Callable[[Any, Any], Pairs]
ReduceFn = Callable[[Any, Iterator[Any]], Pairs]


@overload
def InitMaster(node: Node, data_cid: CID | str, map_fn: MapFn, reduce_fn: ReduceFn,
               n_reducers: int = 1, *, combine_fn: ReduceFn | None = None,
               options: MasterOptions | None = None, **option_overrides: Any) -> Master: ...


@overload
def InitMaster(node: Node, data_cid: CID | str, *, job: object, n_reducers: int = 1,
               options: MasterOptions | None = None, **option_overrides: Any) -> Master: ...


def InitMaster(node: Node, data_cid: CID | str, map_fn: Any = None, reduce_fn: Any = None,
               n_reducers: int = 1, *, combine_fn: ReduceFn | None = None, job: object = None,
               options: MasterOptions | None = None, **option_overrides: Any) -> Master:
    """Create a master for one job.

    Pass the functions, ``InitMaster(node, cid, map_fn, reduce_fn, R)``, or a
    job (a :class:`~p2pmr.Job`, a module, or an object with ``map`` or
    ``map_batch`` and ``reduce``): ``InitMaster(node, cid, job=wordcount,
    n_reducers=R)``. Keyword options override :class:`MasterOptions` fields.
    """
    if job is None and is_job_like(map_fn):
        warnings.warn("pass a job as InitMaster(node, cid, job=..., n_reducers=...)",
                      DeprecationWarning, stacklevel=2)
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
        known = {f.name for f in dataclasses.fields(MasterOptions)}
        unknown = set(option_overrides) - known
        if unknown:
            raise TypeError(f"unknown master option(s): {', '.join(sorted(unknown))}")
        options = dataclasses.replace(options or MasterOptions(), **option_overrides)
    return Master(node, data_cid, the_job, n_reducers, options)
