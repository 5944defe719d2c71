"""Running one task on a peer: fetch its code and input, run it in a worker,
store its output, and say what it produced.

The peer's main process never unpickles job code or calls user functions:
it hands a plain request to a worker process (:mod:`p2pmr._worker`) and gets
a plain outcome back. Every fetch is bounded, in bytes and in time.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgpack
import trio
from libp2p.peer.id import ID as PeerID

from .. import _worker
from ..errors import BlockNotFound, CIDError, UnixFSError, collapsed
from ..node import Node
from ..storage import unixfs
from ..storage.base import Fetcher, fetch_dag
from ..storage.cid import CID
from ..storage.flatfs import FlatFS
from ..wire.codes import ErrorCode
from ..wire.messages import (
    Block,
    Fragment,
    JobSpec,
    MapResult,
    MapTask,
    ReduceResult,
    ReduceTask,
    TaskTimings,
)
from .config import PeerConfig
from .workers import WorkerDied, WorkerPool

__all__ = ["Progress", "TaskFailed", "TaskRunner"]

log = logging.getLogger(__name__)

_CODE_CACHE: Final = 16         # job codes kept in memory
_INLINE_OUTPUT: Final = 256 * 1024  # outputs up to this size travel with the result


class TaskFailed(Exception):
    """A task failed on this peer; ``code`` tells the master how to take it."""

    def __init__(self, code: ErrorCode, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.traceback = traceback


@dataclass
class Progress:
    """What the heartbeats of one assignment report."""

    running: set[int] = field(default_factory=set)
    records: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def start(self, index: int) -> None:
        """A task began executing: tell the master now, not at the next beat."""
        self.running.add(index)
        self.changed.set()


@dataclass
class _Timing:
    fetch: float = 0.0
    queue: float = 0.0
    compute: float = 0.0
    store: float = 0.0

    def message(self) -> TaskTimings:
        return TaskTimings(int(self.fetch * 1000), int(self.queue * 1000),
                           int(self.compute * 1000), int(self.store * 1000))


class _Budget:
    """Bytes a task may still fetch. Sizes are taken as soon as they are known,
    before any fetch waits, so concurrent fetches cannot all pass one check."""

    def __init__(self, total: int, scope: str = "") -> None:
        self.total = total
        self.left = total
        self.scope = scope

    def take(self, size: int, what: str) -> None:
        if size > self.left:
            over = f"{self.total}-byte limit"
            if self.scope:
                over += f" for {self.scope} ({self.left} bytes left)"
            raise TaskFailed(ErrorCode.LIMIT_EXCEEDED, f"{what} is {size} bytes, over this "
                             f"peer's {over} (raise it with `p2pmr peer --max-task-input "
                             f"MIB`)")
        self.left -= size


class TaskRunner:
    """Runs map and reduce tasks for a peer, on its worker pool."""

    def __init__(self, node: Node, config: PeerConfig, workers: WorkerPool) -> None:
        self.node = node
        self.config = config
        self.workers = workers
        self._limiter = trio.CapacityLimiter(max(1, config.workers))
        self._code: OrderedDict[CID, bytes] = OrderedDict()
        # Workers read and write blocks in place when the store is on local disk.
        root = node.blocks.local_root
        self._store_path = str(root) if root is not None else None
        # Reduce tasks spill to disk: under the repo when there is one.
        self._scratch = Path(root) / _worker.SCRATCH if root is not None else None
        if self._scratch is not None:
            _worker.remove_stale_scratch(self._scratch)
        # ...and read in place the blocks held in other repos' stores it reads.
        self._read_stores = [str(r) for r in node.blocks.read_roots]
        # Where a worker finds blocks. Whether a block is there is all a map
        # task needs to know first: the worker checks every block it reads.
        self._on_disk = [FlatFS(p) for p in [self._store_path or "", *self._read_stores] if p]

    def queued(self) -> int:
        return max(0, self._limiter.statistics().tasks_waiting)

    async def run(self, task: MapTask | ReduceTask, job: JobSpec, providers: Sequence[PeerID],
                  progress: Progress) -> MapResult | ReduceResult:
        """Run one task; a line per task in this peer's log says how it went,
        so that whoever runs a peer sees the work it does."""
        what = f"{'map' if isinstance(task, MapTask) else 'reduce'} task {task.id.index} " \
               f"of job {str(task.id.job)[-8:]}"
        started = trio.current_time()
        try:
            result: MapResult | ReduceResult = \
                await self._map(task, job, providers, progress) if isinstance(task, MapTask) \
                else await self._reduce(task, job, providers, progress)
        except TaskFailed as exc:
            log.info("%s failed after %.2fs: %s: %s", what, trio.current_time() - started,
                     exc.code.name, exc.message)
            raise
        log.info("%s done in %.2fs: %d records in, %d out", what,
                 trio.current_time() - started, result.records_in, result.records_out)
        return result

    # -- fetching ----------------------------------------------------------------------

    async def _fetch_file(self, cid: CID, providers: Sequence[PeerID], limit: int | _Budget,
                          what: str, *, read: bool = True) -> bytes:
        """Fetch a UnixFS file into the store (bounded in size); return its bytes if asked.

        ``limit`` is a size in bytes, or a budget shared by several files.
        """
        budget = limit if isinstance(limit, _Budget) else _Budget(limit)
        timeout = self.config.fetch_timeout
        try:
            with trio.fail_after(timeout * 2):
                source = Fetcher(self.node.blocks, timeout, providers)
                segments = await unixfs.file_segments(source, cid)
                budget.take(sum(s.size for s in segments), what)
                await fetch_dag(source, cid, timeout=timeout)
                return await unixfs.read_range(source, cid) if read else b""
        # The message names the root: a master told that a map output is
        # lost recomputes it (spec section 7).
        except BlockNotFound as exc:
            raise TaskFailed(ErrorCode.INPUT_NOT_FOUND, f"cannot fetch {what} {cid}: {exc}") \
                from None
        except trio.TooSlowError:
            raise TaskFailed(ErrorCode.INPUT_NOT_FOUND, f"fetching {what} {cid} took too "
                             f"long") from None
        except (UnixFSError, CIDError) as exc:
            raise TaskFailed(ErrorCode.BAD_REQUEST, f"{what} is not a valid UnixFS file: "
                             f"{exc}") from None

    async def _input_blocks(self, cids: Sequence[CID], providers: Sequence[PeerID], *,
                            checked: bool = False) -> list[bytes]:
        """Make a split's blocks local, fetching the missing ones side by side.

        With a local store the worker reads (and checks) the blocks itself, so
        blocks already here are not read twice; without one, their bytes are
        returned for the worker.
        """
        local = self._store_path is not None
        found: list[bytes] = [b""] * len(cids)
        limiter = trio.CapacityLimiter(8)

        async def one(i: int, cid: CID) -> None:
            async with limiter:
                if local and (await self.node.blocks.has(cid) if checked
                              else any(fs.path_of(cid).exists() for fs in self._on_disk)):
                    return
                data = await self.node.blocks.get(cid, timeout=self.config.fetch_timeout,
                                                  providers=providers)
                if not local:
                    found[i] = data

        try:
            with collapsed():
                async with trio.open_nursery() as nursery:
                    for i, cid in enumerate(cids):
                        nursery.start_soon(one, i, cid)
        except BlockNotFound as exc:
            raise TaskFailed(ErrorCode.INPUT_NOT_FOUND, f"cannot fetch input block: "
                             f"{exc}") from None
        return [] if local else found

    async def _code_for(self, job: JobSpec, providers: Sequence[PeerID]) -> bytes:
        return await self._cached(job.code, providers, "job code")

    async def _cached(self, cid: CID, providers: Sequence[PeerID], what: str) -> bytes:
        """A small file every task of a job needs (its code, its partition
        boundaries), fetched once and kept for the job's later tasks."""
        data = self._code.get(cid)
        if data is None:
            data = await self._fetch_file(cid, providers, self.config.max_code_size, what)
            self._code[cid] = data
            while len(self._code) > _CODE_CACHE:
                self._code.popitem(last=False)
        else:
            self._code.move_to_end(cid)
        return data

    # -- running -----------------------------------------------------------------------

    async def _execute(self, fn: object, request: object, index: int, progress: Progress,
                       timing: _Timing
                       ) -> tuple[_worker.MapOutcome | _worker.ReduceOutcome, tuple[Block, ...]]:
        """Run a task in a worker, then keep its output: (outcome, blocks to send)."""
        outcome = await self._in_worker(fn, request, index, progress, timing)
        assert isinstance(outcome, (_worker.MapOutcome, _worker.ReduceOutcome))
        if outcome.failure is not None:
            failure = outcome.failure
            if failure.debug:  # the master is sent the job's frames; p2pmr's are for here
                log.debug("task %d: the worker's whole traceback:\n%s", index,
                          failure.debug.rstrip())
            raise TaskFailed(failure.code, failure.message, failure.traceback)
        return outcome, await self._keep(outcome.output, timing)

    async def _in_worker(self, fn: object, request: object, index: int, progress: Progress,
                         timing: _Timing) -> object:
        queued = trio.current_time()
        async with self._limiter:
            started = trio.current_time()
            timing.queue += started - queued
            progress.start(index)
            try:
                return await self.workers.run(fn, request)  # type: ignore[arg-type]
            except WorkerDied as exc:
                raise TaskFailed(exc.code, exc.message) from None
            finally:
                progress.running.discard(index)
                timing.compute += trio.current_time() - started

    async def _keep(self, output: _worker.Output, timing: _Timing) -> tuple[Block, ...]:
        """Store (or announce) a task's output blocks; return the ones to send inline."""
        started = trio.current_time()
        if output.stored:
            await self.node.blocks.written([CID.from_bytes(raw) for raw in output.cids])
            inline = output.blocks
        else:
            await self.node.blocks.put_many([(CID.from_bytes(raw), data)
                                             for raw, data in output.blocks])
            inline = output.blocks if sum(len(d) for _, d in output.blocks) <= _INLINE_OUTPUT \
                else []
        timing.store += trio.current_time() - started
        return tuple(Block(CID.from_bytes(raw), data) for raw, data in inline)

    async def _map(self, task: MapTask, job: JobSpec, providers: Sequence[PeerID],
                   progress: Progress) -> MapResult:
        timing = _Timing()
        fetch_started = trio.current_time()
        code = await self._code_for(job, providers)
        request = _worker.MapRequest(
            code_cid=bytes(job.code), code=code, encoding=job.encoding,
            allow_pickle=self.config.allow_pickle, reducers=job.reducers,
            cid_version=job.cid_version, limits=self.config.limits, store=self._store_path,
            read_stores=self._read_stores)
        if job.boundaries is not None:
            request.boundaries = await self._cached(job.boundaries, providers,
                                                    "partition boundaries")
        if task.split is not None:
            split = task.split
            _Budget(self.config.max_input_size).take(split.size, "the split's input")
            blocks = await self._input_blocks(split.blocks, providers)
            request.block_cids = [bytes(c) for c in split.blocks]
            if self._store_path is None:
                request.blocks = blocks  # the worker reads them from the store otherwise
            request.path, request.offset, request.size = split.path, split.offset, split.size
            request.sizes = list(split.block_sizes)
            request.first, request.last = split.first, split.last
        else:
            assert task.records is not None
            request.records = await self._fetch_file(task.records, providers,
                                                     self.config.max_input_size,
                                                     "boundary records")
        timing.fetch = trio.current_time() - fetch_started
        try:
            outcome, _ = await self._execute(_worker.run_map, request, task.id.index,
                                                  progress, timing)
        except TaskFailed as exc:
            if exc.code is not ErrorCode.INPUT_NOT_FOUND or task.split is None \
                    or self._store_path is None:
                raise
            # A local copy was corrupt or gone; the worker set every bad one
            # aside, so fetching again brings intact copies. Once.
            log.info("map task %d: %s; fetching its input again", task.id.index, exc.message)
            await self._input_blocks(task.split.blocks, providers, checked=True)
            outcome, _ = await self._execute(_worker.run_map, request, task.id.index,
                                                  progress, timing)
        assert isinstance(outcome, _worker.MapOutcome)
        progress.records += outcome.records_in
        return MapResult(
            task.id, tuple(CID.from_bytes(raw) if raw else None for raw in outcome.partitions),
            tuple(outcome.partition_records), Fragment(outcome.head_len, outcome.head),
            Fragment(outcome.tail_len, outcome.tail), outcome.no_newline, outcome.records_in,
            outcome.records_out, timing.message(),
            # Map outputs stay here: reducers fetch them from this peer, and
            # the master need not see them (spec section 7).
            ())

    async def _reduce(self, task: ReduceTask, job: JobSpec, providers: Sequence[PeerID],
                      progress: Progress) -> ReduceResult:
        timing = _Timing()
        fetch_started = trio.current_time()
        code = await self._code_for(job, providers)
        inputs = list(task.inputs)
        if task.inputs_list is not None:
            listing = await self._fetch_file(task.inputs_list, providers,
                                             self.config.max_input_size, "input list")
            try:
                inputs += [CID.from_bytes(raw) for raw in msgpack.unpackb(listing)]
            except (CIDError, TypeError, ValueError, msgpack.UnpackException) as exc:
                raise TaskFailed(ErrorCode.BAD_REQUEST, f"malformed input list: {exc}") \
                    from None
        budget = _Budget(self.config.max_input_size, "all inputs together")
        scratch = await trio.to_thread.run_sync(self._make_scratch)
        try:
            request = _worker.ReduceRequest(
                code_cid=bytes(job.code), code=code, encoding=job.encoding,
                allow_pickle=self.config.allow_pickle, cid_version=job.cid_version,
                limits=self.config.limits, partition=task.partition, inputs=[],
                store=self._store_path, read_stores=self._read_stores, spill_dir=str(scratch))
            await self._fetch_inputs(inputs, providers, budget, scratch, request)
            timing.fetch = trio.current_time() - fetch_started
            outcome, inline = await self._execute(_worker.run_reduce, request, task.id.index,
                                                  progress, timing)
        finally:
            # Also after a cancel, which kills the worker before it can clean up.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, scratch, True)
        assert isinstance(outcome, _worker.ReduceOutcome)
        return ReduceResult(task.id, CID.from_bytes(outcome.cid), outcome.records_in,
                            outcome.keys, outcome.records_out, outcome.size, timing.message(),
                            inline)

    def _make_scratch(self) -> Path:
        if self._scratch is not None:
            self._scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"reduce-{os.getpid()}-", dir=self._scratch))

    async def _fetch_inputs(self, inputs: Sequence[CID], providers: Sequence[PeerID],
                            budget: _Budget, scratch: Path,
                            request: _worker.ReduceRequest) -> None:
        """Fetch a reduce task's inputs, and say in ``request`` where the worker finds them.

        With a local store the worker reads them there, by CID. Without one
        (Kubo), each is spooled to a file the worker streams: the inputs
        together can be far larger than the memory of either process.
        """
        local = self._store_path is not None
        request.inputs = [bytes(cid) for cid in inputs] if local else []
        files = [str(scratch / f"input-{i:06d}") for i in range(len(inputs))]
        limiter = trio.CapacityLimiter(16)

        async def fetch(i: int, cid: CID) -> None:
            async with limiter:
                data = await self._fetch_file(cid, providers, budget, "map output",
                                              read=not local)
                if not local:
                    try:
                        await trio.Path(files[i]).write_bytes(data)
                    except OSError as exc:  # a full disk is a limit, as in a worker
                        failure = _worker.spool_failure(exc)
                        raise TaskFailed(failure.code, failure.message) from None

        with collapsed():
            async with trio.open_nursery() as nursery:
                for i, cid in enumerate(inputs):
                    nursery.start_soon(fetch, i, cid)
        if not local:
            request.input_files = files
