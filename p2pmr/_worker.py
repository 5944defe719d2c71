"""What runs inside worker processes: the only place user code executes.

A peer's main process never unpickles job code or calls user functions; it
sends these plain request objects to a worker process and gets plain outcome
objects back. A worker that dies (``os._exit``, a segfault, the kernel's
CPU-limit signal) takes down nothing but itself.

Worker processes start by spawning a fresh interpreter and import only this
module's light dependencies, not libp2p.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import resource
import signal
import sys
import traceback
import types
from collections import OrderedDict
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import cloudpickle
import msgpack

from .encoding import Codec, get_codec, group_pairs
from .errors import BlockNotFound, CIDError, CorruptBlock, EncodingError, UnixFSError
from .job import Job, show_sources
from .records import block_records, decode_line, decode_records
from .settings import setting
from .storage.cid import CID
from .storage.flatfs import FlatFS, FlatFSReader
from .storage.unixfs import ImportOptions, extract_data, import_bytes, read_file_sync
from .wire.codes import ErrorCode

__all__ = ["MapOutcome", "MapRequest", "ReduceOutcome", "ReduceRequest", "WorkerLimits",
           "init_worker", "run_map", "run_reduce", "should_retire"]


_CODE_CACHE: OrderedDict[bytes, Job] = OrderedDict()
_CODE_CACHE_SIZE = 8
_RETIRE = False
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MIB = 1024 * 1024


@dataclass(frozen=True)
class WorkerLimits:
    """Per-task limits enforced inside the worker process."""

    memory_bytes: int | None = setting(  # address space of the worker process
        2 * 1024**3, flag="--max-task-memory", metavar="MIB", scale=1024**2,
        zero_means_none=True, help="Address-space limit of each worker process (0: none).")
    cpu_seconds: float | None = setting(
        600.0, flag="--max-task-cpu", metavar="SECONDS", zero_means_none=True,
        help="CPU time limit per task (0: none).")


class _CPULimit(Exception):
    pass


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise _CPULimit()


def init_worker(limits: WorkerLimits) -> bool:
    """Runs once in each new worker process."""
    if limits.memory_bytes:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the peer decides when to stop us
    return True


def should_retire() -> bool:
    """Retire a worker after it hit a limit: its heap may be in a bad state."""
    return _RETIRE


@contextlib.contextmanager
def _cpu_budget(seconds: float | None) -> Iterator[None]:
    if not seconds:
        yield
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


@dataclass
class Failure:
    code: ErrorCode
    message: str
    traceback: str = ""


@dataclass
class Output:
    """Where a task's output blocks went.

    With a store, the worker wrote every block into it and ``blocks`` holds
    the ones small enough to send along with the result (all or none).
    Without one, ``blocks`` holds every block for the peer to store.
    """

    stored: bool = False
    cids: list[bytes] = field(default_factory=list)
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)

    def finish(self, store: FlatFS | None, made: list[tuple[bytes, bytes]],
               inline_limit: int) -> None:
        self.cids = [c for c, _ in made]
        if store is None:
            self.blocks = made
            return
        for raw, data in made:
            store.write(CID.from_bytes(raw), data)
        self.stored = True
        if sum(len(d) for _, d in made) <= inline_limit:
            self.blocks = made


@dataclass
class MapRequest:
    code_cid: bytes
    code: bytes
    encoding: str
    allow_pickle: bool
    reducers: int
    cid_version: int
    limits: WorkerLimits
    store: str | None = None  # the repo with the flatfs store, if the peer has one
    read_stores: list[str] = field(default_factory=list)  # other repos' stores: read only
    block_cids: list[bytes] = field(default_factory=list)  # the split's run of blocks
    blocks: list[bytes] = field(default_factory=list)  # their bytes, unless read from store
    sizes: list[int] = field(default_factory=list)  # file bytes per block ([]: unchecked)
    size: int = -1            # the bytes the split names (-1: unchecked)
    path: str = ""
    offset: int = 0
    first: bool = True
    last: bool = True
    records: bytes = b""      # a records file (boundary lines) instead of a block
    inline_limit: int = 4096  # fragments up to this size travel inline
    inline_output: int = 256 * 1024  # outputs up to this size travel with the result


@dataclass
class MapOutcome:
    partitions: list[bytes] = field(default_factory=list)  # CID bytes, b"" if empty
    partition_records: list[int] = field(default_factory=list)
    output: Output = field(default_factory=Output)
    head_len: int = 0
    head: bytes | None = None
    tail_len: int = 0
    tail: bytes | None = None
    no_newline: bool = False
    records_in: int = 0
    records_out: int = 0
    failure: Failure | None = None


@dataclass
class ReduceRequest:
    code_cid: bytes
    code: bytes
    encoding: str
    allow_pickle: bool
    cid_version: int
    limits: WorkerLimits
    partition: int
    inputs: list[bytes]  # each map output's bytes, or its CID when the worker reads store
    store: str | None = None
    read_stores: list[str] = field(default_factory=list)  # other repos' stores: read only
    inline_output: int = 256 * 1024


@dataclass
class ReduceOutcome:
    cid: bytes = b""
    output: Output = field(default_factory=Output)
    records_in: int = 0
    keys: int = 0
    records_out: int = 0
    size: int = 0
    failure: Failure | None = None


def _load_job(code_cid: bytes, code: bytes) -> Job:
    job = _CODE_CACHE.get(code_cid)
    if job is not None:
        _CODE_CACHE.move_to_end(code_cid)
        return job
    # The peer read these bytes through the block store, which checks every
    # block against its CID; here they are only ever unpickled, once per CID.
    obj = cloudpickle.loads(code)
    job = Job.from_object(obj) if not isinstance(obj, Job) else obj
    _CODE_CACHE[code_cid] = job
    while len(_CODE_CACHE) > _CODE_CACHE_SIZE:
        _CODE_CACHE.popitem(last=False)
    return job


def _register_job_modules(job: Job) -> None:
    """Let pickle find the job's own classes and functions by name, here.

    The job file travels by value: on the peer its classes claim a module
    (``p2pmr_job_<name>``) that no file provides, so the pickle encoding
    could not carry their instances ("import of module ... failed"). A
    stand-in module holding them makes pickling by reference work, and a
    worker that decodes those records has loaded the same code, so it holds
    the same stand-in. Real, importable modules are never shadowed.

    A worker serves several jobs, and two runs of one job file may carry
    distinct class objects of the same name, so this runs before every task
    and the running job's objects replace whatever the stand-in held.
    """
    seen: set[int] = set()
    pending: list[Any] = [fn for fn in (job.map, job.map_batch, job.reduce, job.combine)
                          if fn is not None]
    while pending:
        obj = pending.pop()
        if id(obj) in seen or not isinstance(obj, (types.FunctionType, type)):
            continue
        seen.add(id(obj))
        module = _standin(getattr(obj, "__module__", None))
        if module is None:
            continue  # from an importable module: pickle finds it, and so do we
        name = obj.__qualname__
        if "." not in name and "<" not in name:
            module.__dict__[name] = obj
        members = vars(obj).values() if isinstance(obj, type) else obj.__globals__.values()
        pending.extend(members)


def _standin(module_name: str | None) -> types.ModuleType | None:
    """The stand-in module for a module no file provides here; None if importable."""
    if not module_name:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        try:
            __import__(module_name)
        except Exception:
            module = sys.modules[module_name] = types.ModuleType(module_name)
            module.__dict__["__p2pmr_standin__"] = True
        else:
            return None
    return module if module.__dict__.get("__p2pmr_standin__") else None


def _remote_traceback(exc: BaseException, *, user_only: bool = False) -> str:
    """The traceback a user reads: their frames, without p2pmr's plumbing.

    Frames of this package (the worker loop, grouping, encoding) say nothing
    about the user's bug; frames of libraries the job calls stay. If the
    error arose in p2pmr itself (a map that yields no pairs, say), the full
    stack is kept, unless ``user_only``: then there is nothing to show.
    """
    summary = traceback.TracebackException.from_exception(exc)
    frames = [f for f in summary.stack if not f.filename.startswith(_PACKAGE_DIR)]
    if frames:
        summary.stack = traceback.StackSummary.from_list(frames)
    elif user_only:
        return ""
    return "".join(summary.format())


@dataclass
class _Doing:
    """What a task is doing, as far as its error messages need to know."""

    what: str                    # "map", "reduce of partition 3"
    limits: WorkerLimits
    largest_record: int = 0      # bytes of the longest record handed to map
    combine: bool | None = None  # whether the job has a combiner (None: not loaded)


def _memory_failure(doing: _Doing) -> Failure:
    """Running out of memory, with the limit named and the ways out."""
    global _RETIRE
    _RETIRE = True
    limits = doing.limits
    limit = (f"the worker memory limit of {limits.memory_bytes // _MIB} MiB"
             if limits.memory_bytes else "the memory this machine could give it")
    ways = ["raise the limit on the peers (`p2pmr peer --max-task-memory MIB`, or "
            "`p2pmr run --local-peers N --max-task-memory MIB`)"]
    text = f"{doing.what} exceeded {limit}"
    if doing.largest_record >= 8 * _MIB:
        text += (f"; one of its records is {doing.largest_record / _MIB:.1f} MiB, and map is "
                 f"handed each record whole")
        ways += ["break the input into lines: a record is one line, and this one has no "
                 "newline for that long"]
    elif doing.what.startswith("reduce"):
        ways += ["use more reducers (`--reducers`), so each holds less"]
        if not doing.combine:
            ways += ["add a combine function, so map tasks emit less"]
    else:
        ways += ["make map hold less of what it emits at once"]
    return Failure(ErrorCode.LIMIT_EXCEEDED, f"{text}. Ways out: {'; '.join(ways)}.")


def _disk_failure(what: str, exc: OSError) -> Failure:
    return Failure(ErrorCode.LIMIT_EXCEEDED, f"{what}: this peer's disk is full ({exc.strerror}: "
                   f"{exc.filename or 'its repo'}); free space on it, or give it a --repo on a "
                   f"bigger disk")


def _resource_failure(exc: BaseException, doing: _Doing) -> Failure | None:
    """Resource exhaustion is a limit, never bad data or the peer's fault."""
    if isinstance(exc, MemoryError):
        return _memory_failure(doing)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_failure(doing.what, exc)
    return None


def _user_failure(exc: BaseException, doing: _Doing) -> Failure:
    global _RETIRE
    what = doing.what
    if isinstance(exc, _CPULimit):
        _RETIRE = True
        cpu = doing.limits.cpu_seconds
        seconds = f"{cpu:g} s" if cpu else "its"
        return Failure(ErrorCode.LIMIT_EXCEEDED, f"{what} exceeded its CPU time limit of "
                       f"{seconds} (the peer's --max-task-cpu)", _remote_traceback(exc))
    resource_failure = _resource_failure(exc, doing)
    if resource_failure is not None:
        # Where the job's own code was when memory ran out, if it was at all.
        resource_failure.traceback = _remote_traceback(exc, user_only=True)
        return resource_failure
    if isinstance(exc, EncodingError):
        return Failure(ErrorCode.USER_CODE_ERROR,
                       f"{what} produced data that cannot be sent: {exc}", _remote_traceback(exc))
    return Failure(ErrorCode.USER_CODE_ERROR, f"{what} raised {type(exc).__name__}: {exc}",
                   _remote_traceback(exc))


def _prepare(code_cid: bytes, code: bytes, encoding: str, allow_pickle: bool,
             limits: WorkerLimits) -> tuple[Job, Codec] | Failure:
    try:
        codec = get_codec(encoding, allow_pickle=allow_pickle)
    except EncodingError as exc:
        # A property of the job (its encoding), not of the request or peer.
        return Failure(ErrorCode.BAD_JOB, str(exc))
    try:
        job = _load_job(code_cid, code)
    except BaseException as exc:  # unpickling runs arbitrary code
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failure = _resource_failure(exc, _Doing("loading the job's code", limits))
        return failure or Failure(ErrorCode.BAD_JOB, f"cannot load the job's code: "
                                  f"{type(exc).__name__}: {exc}", _remote_traceback(exc))
    show_sources(job)
    _register_job_modules(job)
    return job, codec


def _import(data: bytes, cid_version: int, blocks: list[tuple[bytes, bytes]]) -> bytes:
    root, made = import_bytes(data, ImportOptions(cid_version=cid_version))
    blocks.extend((bytes(c), b) for c, b in made)
    return bytes(root)


def _read_block(store: FlatFSReader, cid: CID) -> bytes:
    data = store.read(cid)  # checked against the CID; CorruptBlock if it is not
    if data is None:
        raise UnixFSError(f"block {cid} is not in the peer's store")
    return data


def _reader(store: str | None, read_stores: list[str]) -> FlatFSReader | None:
    """The peer's store, then the other repos' it reads in place (none copied)."""
    return FlatFSReader(store, read_stores) if store or read_stores else None


def _read_run(req: MapRequest, store: FlatFSReader | None) -> bytes:
    """The file bytes of a split's run of blocks, each checked against the split."""
    if req.blocks and len(req.blocks) != len(req.block_cids):
        raise ValueError(f"{len(req.blocks)} blocks sent for a run of {len(req.block_cids)}")
    pieces: list[bytes] = []
    bad: CorruptBlock | BlockNotFound | None = None
    for i, raw in enumerate(req.block_cids):
        cid = CID.from_bytes(raw)
        if req.blocks:
            block = req.blocks[i]
        elif store is not None:
            try:
                found = store.read(cid)  # checked against the CID
            except CorruptBlock as exc:
                # Go on: every bad copy is set aside now, so one fetch
                # replaces them all before the peer's retry.
                bad = bad or exc
                continue
            if found is None:
                bad = bad or BlockNotFound(cid, "not in the peer's store")
                continue
            block = found
        else:
            raise UnixFSError(f"block {cid} was neither sent nor in a store")
        piece = extract_data(cid, block)
        if req.sizes and len(piece) != req.sizes[i]:
            # Not the leaf the master resolved (an inner node, say): its
            # lines would be silently missing from the output.
            raise ValueError(f"block {cid} holds {len(piece)} bytes of file data, not the "
                             f"{req.sizes[i]} its split names")
        pieces.append(piece)
    if bad is not None:
        raise bad
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if req.size >= 0 and len(data) != req.size:
        raise ValueError(f"the split's blocks hold {len(data)} bytes of file data, not the "
                         f"{req.size} it names")
    return data


def _input_failure(exc: CorruptBlock | BlockNotFound) -> Failure:
    # The peer's own disk went bad: the copy is gone now and a retry fetches
    # it again, here or elsewhere. Not the input's fault, nor the master's.
    return Failure(ErrorCode.INPUT_NOT_FOUND, f"input {exc}")


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a task's hot path.

    A task allocates millions of small containers (records, pairs, decoded
    values) that live until it ends, and with the default thresholds the
    collector walks them over and over: decoding partitions ran four times
    slower. During a task, what existed before it (the job's code, imports)
    is frozen out of every collection and collections are rare; young
    cycles are still collected, so user code that makes cycles cannot grow
    without bound.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def run_map(req: MapRequest) -> MapOutcome:
    doing = _Doing("map", req.limits)
    try:
        with _quiet_gc():
            return _run_map(req, doing)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failure = _resource_failure(exc, doing)
        if failure is None:
            raise
        return MapOutcome(failure=failure)


def _run_map(req: MapRequest, doing: _Doing) -> MapOutcome:
    prepared = _prepare(req.code_cid, req.code, req.encoding, req.allow_pickle, req.limits)
    if isinstance(prepared, Failure):
        return MapOutcome(failure=prepared)
    job, codec = prepared
    doing.combine = job.combine is not None
    out = MapOutcome()
    store = FlatFS(req.store) if req.store else None
    try:
        if req.records:
            items = decode_records(req.records)
            doing.largest_record = max((len(r) for _, _, r, _ in items), default=0)
            records: Iterable[tuple[Any, str]] = (
                ((p, o), decode_line(r, t)) for p, o, r, t in items)
            out.records_in = len(items)
        else:
            data = _read_run(req, _reader(req.store, req.read_stores))
            records, out.records_in, edges = block_records(req.path, data, req.offset,
                                                           req.first, req.last)
            out.head_len, out.tail_len, out.no_newline = edges.head, edges.tail, edges.no_newline
            if edges.head and edges.head <= req.inline_limit:
                out.head = data[:edges.head]
            if edges.tail and edges.tail <= req.inline_limit:
                out.tail = data[len(data) - edges.tail:]
    except (CorruptBlock, BlockNotFound) as exc:
        out.failure = _input_failure(exc)
        return out
    except (UnixFSError, ValueError, msgpack.UnpackException) as exc:
        out.failure = Failure(ErrorCode.BAD_REQUEST, f"malformed map input: {exc}")
        return out
    try:
        with _cpu_budget(req.limits.cpu_seconds):
            if job.map_batch is not None:
                pairs: Iterable[tuple[Any, Any]] = job.map_batch(records)
            else:
                assert job.map is not None
                map_fn = job.map
                pairs = chain.from_iterable(map_fn(k, v) for k, v in records)
            partitions, out.records_out, _ = group_pairs(pairs, codec, req.reducers, job.combine)
            # Encoding the values is part of the user's output: a value the
            # encoding cannot carry is the job's error, named as such.
            encoded = [codec.encode_partition(groups) if groups else b""
                       for groups in partitions]
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        out.failure = _user_failure(exc, doing)
        return out
    made: list[tuple[bytes, bytes]] = []
    for groups, data in zip(partitions, encoded, strict=True):
        out.partitions.append(_import(data, req.cid_version, made) if data else b"")
        out.partition_records.append(sum(len(v) for _, v in groups))
    out.output.finish(store, made, req.inline_output)
    return out


def _merge_groups(runs: list[list[Any]]) -> Generator[tuple[bytes, list[Any]], None, None]:
    """Merge runs of (key bytes, values) into whole groups, in key-byte order.

    Values keep the order of the runs, which is the order of the map tasks,
    so a reduce sees the same value order on every peer and every attempt.
    All runs are in memory already, so a dict and one sort of the distinct
    keys beat a heap merge by a wide margin.
    """
    groups: dict[bytes, list[Any]] = {}
    for run in runs:
        for kb, vs in run:
            bucket = groups.get(kb)
            if bucket is None:
                groups[kb] = vs
            else:
                bucket.extend(vs)
    for kb in sorted(groups):
        yield kb, groups[kb]


def _sort_key(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def run_reduce(req: ReduceRequest) -> ReduceOutcome:
    doing = _Doing(f"reduce of partition {req.partition}", req.limits)
    try:
        with _quiet_gc():
            return _run_reduce(req, doing)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        failure = _resource_failure(exc, doing)
        if failure is None:
            raise
        return ReduceOutcome(failure=failure)


def _run_reduce(req: ReduceRequest, doing: _Doing) -> ReduceOutcome:
    prepared = _prepare(req.code_cid, req.code, req.encoding, req.allow_pickle, req.limits)
    if isinstance(prepared, Failure):
        return ReduceOutcome(failure=prepared)
    job, codec = prepared
    doing.combine = job.combine is not None
    out = ReduceOutcome()
    store = FlatFS(req.store) if req.store else None
    reader = _reader(req.store, req.read_stores)
    try:
        if reader is not None:
            datas = [read_file_sync(lambda c: _read_block(reader, c), CID.from_bytes(raw))
                     for raw in req.inputs]
        else:
            datas = req.inputs
        runs = [codec.decode_partition(data) for data in datas]
    except CorruptBlock as exc:
        out.failure = _input_failure(exc)
        return out
    except (EncodingError, UnixFSError, CIDError) as exc:
        out.failure = Failure(ErrorCode.BAD_REQUEST, f"malformed map output: {exc}")
        return out
    out.records_in = sum(len(group[1]) for run in runs for group in run)
    results: list[tuple[Any, Any]] = []
    groups = _merge_groups(runs)
    try:
        with _cpu_budget(req.limits.cpu_seconds):
            for kb, values in groups:
                out.keys += 1
                key = codec.loads(kb)
                for pair in job.reduce(key, iter(values)):
                    try:
                        rk, rv = pair
                    except (TypeError, ValueError):
                        raise TypeError(f"reduce must yield (key, value) pairs, got {pair!r}"
                                        ) from None
                    results.append((rk, rv))
            try:
                results.sort(key=_sort_key)
            except TypeError:  # keys of mixed, unorderable types
                results.sort(key=lambda p: (type(p[0]).__name__, str(p[0])))
            text = "".join(f"{k}\t{v}\n" for k, v in results).encode("utf-8", "surrogateescape")
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        # Free the inputs before anything else runs: after a MemoryError even
        # closing the merge would fail ("Exception ignored in ...").
        runs.clear()
        results.clear()
        groups.close()
        out.failure = _user_failure(exc, doing)
        return out
    out.records_out = len(results)
    out.size = len(text)
    made: list[tuple[bytes, bytes]] = []
    out.cid = _import(text, req.cid_version, made)
    out.output.finish(store, made, req.inline_output)
    return out


def worker_pid() -> int:
    """For tests: which process ran this."""
    return os.getpid()

