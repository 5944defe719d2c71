"""The peer: executes map and reduce tasks that trusted masters send it.

:func:`register_protocol` installs the ``/ipfs/mapreduce/1.0.0`` handler on
a node. For each task stream the peer, in this order:

1. checks the sender's peer ID, which Noise authenticated, against the
   trusted masters, and refuses (NOT_AUTHORISED) before reading, fetching,
   decoding or running anything for anyone else;
2. checks its limits on open streams and concurrent tasks (BUSY);
3. reads one frame, within a deadline and a size limit;
4. fetches the job code (size-limited) and the input by CID;
5. runs the user code in a worker process while the event loop keeps
   sending heartbeats and watching for Cancel;
6. stores the output blocks and answers with their CIDs, or with an error
   that carries the remote traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack
import trio
import trio_parallel
from libp2p.abc import INetStream
from libp2p.peer.id import ID as PeerID

from . import _worker
from ._libp2p import close_quietly
from .errors import (
    BlockNotFound,
    CIDError,
    P2PMRError,
    ProtocolError,
    UnixFSError,
    collapsed,
)
from .job import STABLE_HASH_ENV
from .node import Node
from .protocol import (
    PROTOCOL_ID,
    VERSION,
    FrameReader,
    FrameWriter,
    body,
    error_frame,
    pb,
)
from .storage import unixfs
from .storage.base import Fetcher, fetch_dag
from .storage.cid import CID

__all__ = ["PeerConfig", "PeerService", "Trust", "register_protocol"]

log = logging.getLogger(__name__)

TRUST_FILE: Final = "trusted_masters"
_MIN_HEARTBEAT: Final = 0.05
_MAX_HEARTBEAT: Final = 30.0


class Trust:
    """Which masters may run code here.

    The set is the explicit peer IDs plus those listed in the repo's
    ``trusted_masters`` file (one peer ID per line, ``#`` comments), which is
    re-read when it changes. ``trust_any`` accepts every master and is meant
    only for closed test swarms.
    """

    def __init__(self, peers: Iterable[str | PeerID] = (), *, trust_any: bool = False,
                 file: Path | None = None) -> None:
        self.trust_any = trust_any
        self._explicit = {str(p) for p in peers}
        self._file = file
        self._file_mtime: float | None = None
        self._from_file: set[str] = set()
        if trust_any:
            log.warning("TRUSTING ANY MASTER: any peer that can reach this one can run "
                        "arbitrary code on it. Use only in a closed test swarm.")

    def add(self, peer: str | PeerID) -> None:
        self._explicit.add(str(peer))

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
        except FileNotFoundError:
            self._from_file = set()
            self._file_mtime = None
            return
        if mtime == self._file_mtime:
            return
        entries = set()
        for number, line in enumerate(self._file.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if not _is_peer_id(line):
                log.warning("%s line %d: %r is not a peer ID; ignored", self._file, number, line)
                continue
            entries.add(line)
        self._from_file = entries
        self._file_mtime = mtime

    def allows(self, peer: PeerID) -> bool:
        if self.trust_any:
            return True
        text = str(peer)
        if text in self._explicit:
            return True
        self._reload()
        return text in self._from_file

    def count(self) -> int:
        """How many masters are trusted now (0 with ``trust_any``: it lists none)."""
        self._reload()
        return len(self._explicit | self._from_file)

    def describe(self) -> str:
        if self.trust_any:
            return "any master"
        return f"{self.count()} trusted master(s)"


def _is_peer_id(text: str) -> bool:
    try:
        return str(PeerID.from_base58(text)) == text
    except Exception:
        return False


def usable_cpus() -> int:
    """The CPUs this process may really use, which is what sizes worker pools.

    ``os.cpu_count()`` reports the host's cores: in a container limited to
    two CPUs on a 64-core host it would start 64 worker processes, each
    spawning a fresh interpreter. loky's count honours CPU affinity and
    cgroup (v1 and v2) quotas.
    """
    from loky import cpu_count

    return max(1, int(cpu_count()))


@dataclass(frozen=True)
class PeerConfig:
    """Limits and policy for a peer. Defaults suit a volunteer machine."""

    workers: int = field(default_factory=usable_cpus)
    allow_pickle: bool = False
    limits: _worker.WorkerLimits = field(default_factory=_worker.WorkerLimits)
    max_frame_size: int = 1024 * 1024
    max_code_size: int = 16 * 1024 * 1024
    max_input_size: int = 512 * 1024 * 1024    # per task, all inputs together
    max_tasks_per_master: int = 64               # concurrent tasks per master
    max_streams_per_peer: int = 16               # concurrent protocol streams per remote peer
    max_streams: int = 256                       # concurrent protocol streams in all
    task_wall_seconds: float = 3600.0
    first_frame_timeout: float = 10.0
    fetch_timeout: float = 60.0


@dataclass
class PeerStats:
    maps: int = 0
    reduces: int = 0
    refused: int = 0
    failed: int = 0
    worker_deaths: int = 0


@dataclass
class _TaskState:
    fetch: float = 0.0
    queue: float = 0.0
    compute: float = 0.0
    store: float = 0.0

    def timings(self) -> pb.TaskTimings:
        return pb.TaskTimings(fetch_ms=int(self.fetch * 1000), queue_ms=int(self.queue * 1000),
                              compute_ms=int(self.compute * 1000),
                              store_ms=int(self.store * 1000))


@dataclass
class _Assignment:
    """What the heartbeat reports for one assignment stream."""

    running: set[int] = field(default_factory=set)
    records: int = 0
    changed: trio.Event = field(default_factory=trio.Event)

    def start(self, index: int) -> None:
        """A task began executing: tell the master now, not at the next beat."""
        self.running.add(index)
        self.changed.set()


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
            raise _TaskFailed(pb.LIMIT_EXCEEDED, f"{what} is {size} bytes, over this peer's "
                              f"{over}")
        self.left -= size


class _TaskFailed(Exception):
    def __init__(self, code: int, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.traceback = traceback


class PeerService:
    """Serves map and reduce tasks on one node. Create with :func:`register_protocol`."""

    def __init__(self, node: Node, config: PeerConfig, trust: Trust) -> None:
        self.node = node
        self.config = config
        self.trust = trust
        self.stats = PeerStats()
        self._limiter = trio.CapacityLimiter(max(1, config.workers))
        self._active: dict[PeerID, int] = {}
        self._streams: dict[PeerID, int] = {}
        self._code: OrderedDict[CID, bytes] = OrderedDict()
        self._ctx: Any = None
        self._ready = trio.Event()
        # Workers read and write blocks in place when the store is on local disk.
        root = node.blocks.local_root
        self._store_path = str(root) if root is not None else None

    async def run(self) -> None:
        """Own the worker processes for the node's lifetime.

        Workers start with a fixed hash seed (set in this process's
        environment, which they inherit): user code that iterates over a set
        then yields the same records on every attempt and every peer.
        """
        os.environ.update(STABLE_HASH_ENV)
        init = functools.partial(_worker.init_worker, self.config.limits)
        async with trio_parallel.open_worker_context(
                idle_timeout=600, init=init, retire=_worker.should_retire,
                grace_period=5, worker_type=trio_parallel.WorkerType.SPAWN) as ctx:
            self._ctx = ctx
            # Start the worker processes now rather than on the first task.
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.workers):
                    nursery.start_soon(ctx.run_sync, _worker.worker_pid)
            self._ready.set()
            await trio.sleep_forever()

    # -- stream handling -----------------------------------------------------------

    async def handle(self, stream: INetStream) -> None:
        remote: PeerID = stream.muxed_conn.peer_id
        writer = FrameWriter(stream, timeout=10)
        # Who is asking decides everything else: nothing an untrusted peer
        # sends is even decoded.
        if not self.trust.allows(remote):
            log.warning("refused a stream from untrusted peer %s", remote)
            await self._refuse(writer, pb.NOT_AUTHORISED,
                               f"peer {remote} is not a trusted master of this peer")
            await close_quietly(stream)
            return
        if self._streams.get(remote, 0) >= self.config.max_streams_per_peer or \
                sum(self._streams.values()) >= self.config.max_streams:
            await self._refuse(writer, pb.BUSY, "too many open streams")
            await close_quietly(stream, reset=True)
            return
        self._streams[remote] = self._streams.get(remote, 0) + 1
        reader = FrameReader(stream, max_size=self.config.max_frame_size)
        try:
            await self._serve(remote, reader, writer)
        except ProtocolError as exc:
            log.debug("stream from %s: %s", remote, exc)
            await close_quietly(stream, reset=True)
        except Exception:  # never let one stream take the peer down
            log.exception("unexpected error serving %s", remote)
            await close_quietly(stream, reset=True)
        else:
            await close_quietly(stream)
        finally:
            self._streams[remote] -= 1
            if not self._streams[remote]:
                del self._streams[remote]

    async def _refuse(self, writer: FrameWriter, code: int, message: str,
                      task_id: pb.TaskId | None = None) -> None:
        self.stats.refused += 1
        with trio.move_on_after(5):
            try:
                await writer.write(error_frame(code, message, task_id=task_id))
            except ProtocolError:
                pass

    async def _serve(self, remote: PeerID, reader: FrameReader, writer: FrameWriter) -> None:
        try:
            frame = await reader.read(self.config.first_frame_timeout)
        except ProtocolError as exc:
            await self._refuse(writer, pb.BAD_REQUEST, str(exc))
            return
        if frame is None:
            return
        if frame.version != VERSION:
            await self._refuse(writer, pb.UNSUPPORTED_VERSION,
                               f"this peer speaks version {VERSION}, not {frame.version}")
            return
        kind, assignment = body(frame)
        if kind != "assignment":
            what = kind or "a message type this peer does not know"
            await self._refuse(writer, pb.BAD_REQUEST, f"expected an assignment, got {what}")
            return
        try:
            tasks = self._validate(assignment)
        except (P2PMRError, ValueError) as exc:
            await self._refuse(writer, pb.BAD_REQUEST, f"malformed assignment: {exc}")
            return
        active = self._active.get(remote, 0)
        if active + len(tasks) > self.config.max_tasks_per_master:
            await self._refuse(writer, pb.BUSY, f"{active} tasks from this master already here; "
                               f"limit {self.config.max_tasks_per_master}")
            return
        self._active[remote] = active + len(tasks)
        try:
            await self._run_assignment(assignment, tasks, remote, reader, writer)
        finally:
            self._active[remote] -= len(tasks)
            if not self._active[remote]:
                del self._active[remote]

    def _validate(self, assignment: Any) -> list[tuple[str, Any]]:
        spec = assignment.job
        CID.from_bytes(spec.job)
        CID.from_bytes(spec.code)
        if not 1 <= spec.reducers <= 100_000:
            raise ValueError(f"reducers must be 1..100000, not {spec.reducers}")
        if spec.cid_version not in (0, 1):
            raise ValueError("cid_version must be 0 or 1")
        if spec.encoding not in ("", "msgpack", "pickle"):
            raise ValueError(f"unknown encoding {spec.encoding!r}")
        for raw in assignment.providers:
            PeerID(raw)
        tasks: list[tuple[str, Any]] = [("map", t) for t in assignment.maps]
        tasks += [("reduce", t) for t in assignment.reduces]
        if not tasks:
            raise ValueError("an assignment without tasks")
        seen = set()
        for kind, task in tasks:
            if task.id.index in seen:
                raise ValueError(f"task {task.id.index} appears twice")
            seen.add(task.id.index)
            if kind == "map":
                which = task.WhichOneof("input")
                if which == "split":
                    CID.from_bytes(task.split.block)
                elif which == "records":
                    CID.from_bytes(task.records)
                else:
                    raise ValueError("map task without input")
            else:
                if task.partition >= spec.reducers:
                    raise ValueError("partition out of range")
                for raw in task.inputs:
                    CID.from_bytes(raw)
                if task.inputs_list:
                    CID.from_bytes(task.inputs_list)
        return tasks

    async def _run_assignment(self, assignment: Any, tasks: list[tuple[str, Any]],
                              remote: PeerID, reader: FrameReader, writer: FrameWriter) -> None:
        await self._ready.wait()
        log.debug("assignment of %d %s task(s) from %s", len(tasks), tasks[0][0], remote)
        await self.node.introduce(remote)
        interval = min(max(assignment.heartbeat_ms / 1000.0, _MIN_HEARTBEAT), _MAX_HEARTBEAT) \
            if assignment.heartbeat_ms else 1.0
        state = _Assignment()
        await writer.write(pb.Frame(accepted=pb.Accepted(
            queued=max(0, self._limiter.statistics().tasks_waiting))))
        scopes: dict[int, trio.CancelScope] = {}
        async with trio.open_nursery() as nursery:
            heartbeat_scope = trio.CancelScope()

            async def heartbeats() -> None:
                with heartbeat_scope:
                    await self._heartbeats(writer, state, interval)

            async def watch() -> None:
                """Cancel tasks on Cancel frames; everything when the master goes."""
                while True:
                    try:
                        frame = await reader.read(timeout=float("inf"))
                    except ProtocolError:
                        frame = None
                    if frame is None:
                        nursery.cancel_scope.cancel()
                        return
                    if frame.WhichOneof("body") != "cancel":
                        continue
                    if frame.cancel.HasField("id"):
                        scope = scopes.get(frame.cancel.id.index)
                        if scope is not None:
                            scope.cancel()
                    else:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(heartbeats)
            nursery.start_soon(watch)
            async with trio.open_nursery() as task_nursery:
                for kind, task in tasks:
                    scope = trio.CancelScope()
                    scopes[task.id.index] = scope
                    task_nursery.start_soon(self._run_one, kind, task, assignment, remote,
                                            state, writer, scope)
            nursery.cancel_scope.cancel()

    async def _run_one(self, kind: str, task: Any, assignment: Any, remote: PeerID,
                       state: _Assignment, writer: FrameWriter, scope: trio.CancelScope) -> None:
        result: pb.Frame | None = None
        with scope:
            with trio.move_on_after(self.config.task_wall_seconds) as wall:
                try:
                    if kind == "map":
                        result = await self._map(task, assignment, remote, state)
                    else:
                        result = await self._reduce(task, assignment, remote, state)
                except _TaskFailed as exc:
                    self.stats.failed += 1
                    result = error_frame(exc.code, exc.message, exc.traceback, task.id)
                except Exception as exc:  # a bug of ours: fail this task, not the stream
                    log.exception("internal error running %s task %d", kind, task.id.index)
                    self.stats.failed += 1
                    result = error_frame(pb.INTERNAL, f"internal error on the peer: {exc!r}",
                                         traceback.format_exc(), task.id)
            if wall.cancelled_caught:
                result = error_frame(pb.LIMIT_EXCEEDED,
                                     f"task exceeded the peer's {self.config.task_wall_seconds:g}s "
                                     "wall-clock limit", task_id=task.id)
        if result is None:
            log.debug("%s task %d cancelled by the master", kind, task.id.index)
            return
        try:
            await writer.write(result)
        except ProtocolError as exc:
            log.debug("could not send the result of task %d: %s", task.id.index, exc)

    async def _heartbeats(self, writer: FrameWriter, state: _Assignment,
                          interval: float) -> None:
        while True:
            with trio.move_on_after(interval):
                await state.changed.wait()
            state.changed = trio.Event()
            try:
                await writer.write(pb.Frame(progress=pb.Progress(
                    records=state.records, running=sorted(state.running))))
            except ProtocolError as exc:
                log.debug("heartbeat failed, the master is gone: %s", exc)
                return

    # -- task execution --------------------------------------------------------------

    def _providers(self, assignment: Any, remote: PeerID) -> list[PeerID]:
        out = [PeerID(raw) for raw in assignment.providers]
        if remote not in out:
            out.append(remote)
        return out

    async def _fetch_file(self, cid: CID, providers: Sequence[PeerID], limit: int | _Budget,
                          what: str, *, read: bool = True) -> bytes:
        """Fetch a UnixFS file into the store (bounded in size); return its bytes if asked.

        ``limit`` is a size in bytes, or a budget shared by several files.
        """
        budget = limit if isinstance(limit, _Budget) else _Budget(limit)
        blocks = self.node.blocks
        timeout = self.config.fetch_timeout
        try:
            with trio.fail_after(timeout * 2):
                source = Fetcher(blocks, timeout, providers)
                segments = await unixfs.file_segments(source, cid)
                budget.take(sum(s.size for s in segments), what)
                await fetch_dag(source, cid, timeout=timeout)
                return await unixfs.read_range(source, cid) if read else b""
        except BlockNotFound as exc:
            raise _TaskFailed(pb.INPUT_NOT_FOUND, f"cannot fetch {what}: {exc}") from None
        except trio.TooSlowError:
            raise _TaskFailed(pb.INPUT_NOT_FOUND, f"fetching {what} took too long") from None
        except (UnixFSError, CIDError) as exc:
            raise _TaskFailed(pb.BAD_REQUEST, f"{what} is not a valid UnixFS file: {exc}") from None

    async def _code_for(self, spec: Any, providers: Sequence[PeerID]) -> tuple[CID, bytes]:
        cid = CID.from_bytes(spec.code)
        code = self._code.get(cid)
        if code is None:
            code = await self._fetch_file(cid, providers, self.config.max_code_size, "job code")
            self._code[cid] = code
            while len(self._code) > 16:
                self._code.popitem(last=False)
        else:
            self._code.move_to_end(cid)
        return cid, code

    async def _in_worker(self, fn: Any, request: Any, index: int, assignment: _Assignment,
                         timing: _TaskState) -> Any:
        queued = trio.current_time()
        async with self._limiter:
            started = trio.current_time()
            timing.queue += started - queued
            assignment.start(index)
            oom_kills = _cgroup_oom_kills()
            try:
                return await self._ctx.run_sync(fn, request, kill_on_cancel=True)
            except trio_parallel.BrokenWorkerError as exc:
                self.stats.worker_deaths += 1
                after = _cgroup_oom_kills()
                oom = oom_kills is not None and after is not None and after > oom_kills
                code, message = _death_reason(exc, oom_killed=oom,
                                              limits=self.config.limits)
                raise _TaskFailed(code, message) from None
            finally:
                assignment.running.discard(index)
                timing.compute += trio.current_time() - started

    async def _keep(self, output: _worker.Output, timing: _TaskState) -> list[pb.Block]:
        """Store (or announce) a task's output blocks; return the ones to send inline."""
        started = trio.current_time()
        if output.stored:
            await self.node.blocks.written([CID.from_bytes(raw) for raw in output.cids])
            inline = output.blocks
        else:
            await self.node.blocks.put_many([(CID.from_bytes(raw), data)
                                             for raw, data in output.blocks])
            inline = output.blocks if sum(len(d) for _, d in output.blocks) <= 256 * 1024 else []
        timing.store += trio.current_time() - started
        return [pb.Block(cid=raw, data=data) for raw, data in inline]

    async def _map(self, task: Any, assignment: Any, remote: PeerID,
                   state: _Assignment) -> pb.Frame:
        spec = assignment.job
        timing = _TaskState()
        providers = self._providers(assignment, remote)
        fetch_started = trio.current_time()
        code_cid, code = await self._code_for(spec, providers)
        request = _worker.MapRequest(
            code_cid=bytes(code_cid), code=code, encoding=spec.encoding or "msgpack",
            allow_pickle=self.config.allow_pickle, reducers=spec.reducers,
            cid_version=spec.cid_version, limits=self.config.limits, store=self._store_path)
        if task.WhichOneof("input") == "split":
            split = task.split
            block_cid = CID.from_bytes(split.block)
            try:
                block = await self.node.blocks.get(
                    block_cid, timeout=self.config.fetch_timeout, providers=providers)
            except BlockNotFound as exc:
                raise _TaskFailed(pb.INPUT_NOT_FOUND, f"cannot fetch input block: {exc}") from None
            request.block_cid = bytes(block_cid)
            if self._store_path is None:
                request.block = block  # the worker reads it from the store otherwise
            request.path, request.offset, request.size = split.path, split.offset, split.size
            request.first, request.last = split.first, split.last
        else:
            request.records = await self._fetch_file(
                CID.from_bytes(task.records), providers, self.config.max_input_size,
                "boundary records")
        timing.fetch = trio.current_time() - fetch_started
        outcome: _worker.MapOutcome = await self._in_worker(_worker.run_map, request,
                                                            task.id.index, state, timing)
        if outcome.failure is not None:
            failure = outcome.failure
            raise _TaskFailed(failure.code, failure.message, failure.traceback)
        inline = await self._keep(outcome.output, timing)
        state.records += outcome.records_in
        self.stats.maps += 1
        result = pb.MapResult(
            id=task.id, partitions=outcome.partitions,
            partition_records=outcome.partition_records,
            no_newline=outcome.no_newline, records_in=outcome.records_in,
            records_out=outcome.records_out, timings=timing.timings(), blocks=inline)
        result.head.length = outcome.head_len
        if outcome.head is not None:
            result.head.data, result.head.inline = outcome.head, True
        result.tail.length = outcome.tail_len
        if outcome.tail is not None:
            result.tail.data, result.tail.inline = outcome.tail, True
        return pb.Frame(map_result=result)

    async def _reduce(self, task: Any, assignment: Any, remote: PeerID,
                      state: _Assignment) -> pb.Frame:
        spec = assignment.job
        timing = _TaskState()
        providers = self._providers(assignment, remote)
        fetch_started = trio.current_time()
        code_cid, code = await self._code_for(spec, providers)
        inputs = [CID.from_bytes(raw) for raw in task.inputs]
        if task.inputs_list:
            listing = await self._fetch_file(CID.from_bytes(task.inputs_list), providers,
                                             self.config.max_input_size, "input list")
            try:
                inputs += [CID.from_bytes(raw) for raw in msgpack.unpackb(listing)]
            except (CIDError, TypeError, ValueError, msgpack.UnpackException) as exc:
                raise _TaskFailed(pb.BAD_REQUEST, f"malformed input list: {exc}") from None
        budget = _Budget(self.config.max_input_size, "all inputs together")
        local = self._store_path is not None
        datas: list[bytes] = [b""] * len(inputs)
        limiter = trio.CapacityLimiter(16)

        async def fetch(i: int, cid: CID) -> None:
            async with limiter:
                data = await self._fetch_file(cid, providers, budget, "map output",
                                              read=not local)
            datas[i] = bytes(cid) if local else data

        with collapsed():
            async with trio.open_nursery() as nursery:
                for i, cid in enumerate(inputs):
                    nursery.start_soon(fetch, i, cid)
        timing.fetch = trio.current_time() - fetch_started
        request = _worker.ReduceRequest(
            code_cid=bytes(code_cid), code=code, encoding=spec.encoding or "msgpack",
            allow_pickle=self.config.allow_pickle, cid_version=spec.cid_version,
            limits=self.config.limits, partition=task.partition, inputs=datas,
            store=self._store_path)
        outcome: _worker.ReduceOutcome = await self._in_worker(_worker.run_reduce, request,
                                                               task.id.index, state, timing)
        if outcome.failure is not None:
            failure = outcome.failure
            raise _TaskFailed(failure.code, failure.message, failure.traceback)
        inline = await self._keep(outcome.output, timing)
        self.stats.reduces += 1
        return pb.Frame(reduce_result=pb.ReduceResult(
            id=task.id, output=outcome.cid, records_in=outcome.records_in, keys=outcome.keys,
            records_out=outcome.records_out, bytes=outcome.size, timings=timing.timings(),
            blocks=inline))


def _memory_cgroup() -> tuple[Path, Path] | None:
    """This process's memory cgroup: (its OOM-kill counter, its limit), v2 or v1."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:  # cgroup v2
            files = ("memory.events", "memory.max")
            bases = [Path("/sys/fs/cgroup") / path.lstrip("/"), Path("/sys/fs/cgroup")]
        elif "memory" in controllers.split(","):  # cgroup v1
            files = ("memory.oom_control", "memory.limit_in_bytes")
            bases = [Path("/sys/fs/cgroup/memory") / path.lstrip("/"),
                     Path("/sys/fs/cgroup/memory")]
        else:
            continue
        for base in bases:
            if (base / files[0]).exists():
                return base / files[0], base / files[1]
    return None


_MEMORY_CGROUP = _memory_cgroup()


def _cgroup_oom_kills() -> int | None:
    """How often the kernel's OOM killer has struck in our memory cgroup, if known."""
    if _MEMORY_CGROUP is None:
        return None
    try:
        for line in _MEMORY_CGROUP[0].read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _cgroup_memory_limit() -> str:
    if _MEMORY_CGROUP is not None:
        try:
            value = _MEMORY_CGROUP[1].read_text().strip()
            if value.isdigit() and int(value) < 2**60:
                return f" of {int(value) // 2**20} MiB"
        except OSError:
            pass
    return ""


def _death_reason(exc: BaseException, *, oom_killed: bool = False,
                  limits: _worker.WorkerLimits | None = None) -> tuple[int, str]:
    proc = exc.args[1] if len(exc.args) > 1 else None
    code = getattr(proc, "exitcode", None)
    if code == -signal.SIGXCPU:
        return pb.LIMIT_EXCEEDED, "the worker process exceeded its CPU time limit"
    if code == -signal.SIGKILL and oom_killed:
        own = f"{limits.memory_bytes // 2**20} MiB" if limits and limits.memory_bytes else "none"
        return pb.LIMIT_EXCEEDED, (
            f"the kernel's out-of-memory killer ended the worker process: the peer's memory "
            f"(its cgroup's limit{_cgroup_memory_limit()}) ran out before the worker's own "
            f"limit (--max-task-memory: {own}). Ways out: give the peer more memory, set "
            f"--max-task-memory below what it has (then the task fails cleanly), use more "
            f"reducers, or add a combine function")
    if code == -signal.SIGKILL:
        return pb.WORKER_DIED, "the worker process was killed (SIGKILL; out of memory?)"
    if code is not None and code < 0:
        return pb.WORKER_DIED, f"the worker process died of signal {signal.Signals(-code).name}"
    return pb.WORKER_DIED, f"the worker process exited unexpectedly (exit code {code})"


async def _announce_protocols(node: Node) -> None:
    """Tell peers we are already connected to (a master we bootstrapped to,
    say) that we now speak the protocol; identify ran before we did."""
    push = getattr(node.host, "_push_identify_to_all_peers", None)
    if push is not None:
        try:
            await push()
        except Exception as exc:
            log.debug("identify push failed: %s", exc)


def register_protocol(node: Node, *, trust: Iterable[str | PeerID] = (),
                      trust_any: bool = False, workers: int | None = None,
                      allow_pickle: bool = False, config: PeerConfig | None = None
                      ) -> PeerService:
    """Make ``node`` a worker: register the ``/ipfs/mapreduce/1.0.0`` handler.

    Masters are trusted if listed in ``trust`` or in the repo's
    ``trusted_masters`` file; ``trust_any`` trusts every master (closed test
    swarms only). ``workers`` is how many tasks run at once (default: the
    CPU count), each in its own process.
    """
    if config is None:
        config = PeerConfig(allow_pickle=allow_pickle) if not workers else \
            PeerConfig(allow_pickle=allow_pickle, workers=workers)
    service = PeerService(node, config,
                          Trust(trust, trust_any=trust_any, file=node.repo / TRUST_FILE))
    node.host.set_stream_handler(PROTOCOL_ID, service.handle)
    node.spawn(service.run)
    node.spawn(_announce_protocols, node)
    log.info("serving %s with %d worker(s) for %s", PROTOCOL_ID, config.workers,
             service.trust.describe())
    if not trust_any and not service.trust.count():
        log.warning("this peer trusts no master, so it will refuse every job. Restart it "
                    "with --trust MASTER_PEER_ID (`p2pmr id --repo MASTER_REPO` prints it; "
                    "trust=[...] in register_protocol), or list master IDs in %s, which is "
                    "re-read when it changes", node.repo / TRUST_FILE)
    return service
