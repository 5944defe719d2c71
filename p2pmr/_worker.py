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
import io
import os
import resource
import shutil
import signal
import sys
import tempfile
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack

from .encoding import MSGPACK, Codec, get_codec, group_pairs, unencodable
from .errors import (
    BlockNotFound,
    CIDError,
    CorruptBlock,
    EncodingError,
    JobError,
    UnencodableRecord,
    UnixFSError,
)
from .job import Job, show_sources
from .jobfile import user_traceback
from .outsort import OutputSorter
from .partition import Partitioner, TotalOrder, bind_partition, boundaries_of
from .records import block_records, decode_line, decode_records
from .runs import (
    ChunkReader,
    Counter,
    MalformedInput,
    Opener,
    Run,
    decoded_run,
    merge_runs,
    read_run,
)
from .settings import setting
from .storage.cid import CID
from .storage.flatfs import FlatFS, FlatFSReader
from .storage.unixfs import (
    ImportOptions,
    StreamImporter,
    extract_data,
    import_bytes,
    iter_file_sync,
)
from .wire.codes import ErrorCode

__all__ = ["MapOutcome", "MapRequest", "ReduceOutcome", "ReduceRequest", "SampleBlock",
           "SampleOutcome", "SampleRequest", "WorkerLimits", "init_worker", "run_map",
           "run_reduce", "run_sample", "should_retire"]


_CODE_CACHE: OrderedDict[bytes, Job] = OrderedDict()
_CODE_CACHE_SIZE = 8
_RETIRE = False
_MIB = 1024 * 1024
SCRATCH = "scratch"  # a repo's directory for reduce tasks' temporary files


@dataclass(frozen=True)
class WorkerLimits:
    """Per-task limits enforced inside the worker process."""

    memory_bytes: int | None = setting(  # address space of the worker process
        2 * 1024**3, flag="--max-task-memory", metavar="MIB", scale=1024**2,
        zero_means_none=True, help="Address-space limit of each worker process (0: none).")
    cpu_seconds: float | None = setting(
        600.0, flag="--max-task-cpu", metavar="SECONDS", zero_means_none=True,
        help="CPU time limit per task (0: none).")
    reduce_memory: int = setting(
        128 * 1024**2, flag="--reduce-memory", metavar="MIB", scale=1024**2, low=1,
        help="Output a reduce task holds before it sorts the rest on disk.")
    reduce_fan_in: int = setting(
        64, flag="--reduce-fan-in", metavar="N", low=2,
        help="Inputs a reduce task merges at once; more take passes through the disk.")


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
    traceback: str = ""  # what the master's user reads: the job's own frames
    debug: str = ""      # the whole traceback, p2pmr's frames too, for the peer's DEBUG log


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
    boundaries: bytes | None = None  # the sampled boundaries file, for a TotalOrder job


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
    inputs: list[bytes]  # each map output's CID (worker reads store), or its bytes
    store: str | None = None
    read_stores: list[str] = field(default_factory=list)  # other repos' stores: read only
    inline_output: int = 256 * 1024
    input_files: list[str] = field(default_factory=list)  # spooled inputs, instead
    spill_dir: str | None = None  # the peer's scratch directory for this task, if any


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
    pending: list[Any] = [fn for fn in (job.map, job.map_batch, job.reduce, job.combine,
                                        job.partition) if fn is not None]
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


@dataclass
class _Doing:
    """What a task is doing, as far as its error messages need to know."""

    what: str                    # "map", "reduce of partition 3"
    limits: WorkerLimits
    largest_record: int = 0      # bytes of the longest record handed to map
    combine: bool | None = None  # whether the job has a combiner (None: not loaded)
    job: Job | None = None       # the job's code, once loaded


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


def spool_failure(exc: OSError) -> Failure:
    """The peer could not spool a reduce task's input to its disk."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_failure("spooling a reduce task's input", exc)
    return Failure(ErrorCode.INTERNAL, f"cannot spool a reduce task's input: {exc}")


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
                       f"{seconds} (the peer's --max-task-cpu)", user_traceback(exc))
    resource_failure = _resource_failure(exc, doing)
    if resource_failure is not None:
        # Where the job's own code was when memory ran out, if it was at all.
        resource_failure.traceback = user_traceback(exc, user_only=True)
        return resource_failure
    full = "".join(traceback.format_exception(exc))
    # An encoding error's frames are p2pmr's encoder and msgpack's alone (the
    # job's generator had moved on): the message must say it all.
    if isinstance(exc, UnencodableRecord):
        return Failure(ErrorCode.USER_CODE_ERROR, _located(exc, doing.job), debug=full)
    if isinstance(exc, EncodingError):
        return Failure(ErrorCode.USER_CODE_ERROR,
                       f"{what} produced data that cannot be sent: {exc}", debug=full)
    return Failure(ErrorCode.USER_CODE_ERROR, f"{what} raised {type(exc).__name__}: {exc}",
                   user_traceback(exc), full)


def _located(exc: UnencodableRecord, job: Job | None) -> str:
    """The error's message, naming the job's function and where it is defined:
    "map_batch (wordcount.py, line 12) yielded ..."."""
    name = exc.function
    fn: object = None
    if job is not None:
        if name == "map" and job.map_batch is not None:
            name = "map_batch"
        fn = getattr(job, name, None)
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType):
        name += f" ({os.path.basename(code.co_filename)}, line {code.co_firstlineno})"
    return f"{name} {exc.detail}"


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
                                  f"{type(exc).__name__}: {exc}", user_traceback(exc))
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


def _partitioner(job: Job, codec: Codec, req: MapRequest) -> Partitioner | Failure | None:
    """The job's partitioner, bound to its sampled boundaries; None for crc32."""
    try:
        return bind_partition(job.partition, req.boundaries, codec, req.reducers)
    except JobError as exc:  # the job needs what the assignment lacks
        return Failure(ErrorCode.BAD_JOB, str(exc))
    except EncodingError as exc:
        return Failure(ErrorCode.BAD_REQUEST, f"malformed partition boundaries: {exc}")


@dataclass
class SampleBlock:
    """One leaf block the master samples: its file data and where it lies."""

    path: str
    offset: int
    data: bytes
    first: bool  # the file's first block
    last: bool   # the file's last block


@dataclass
class SampleRequest:
    code_cid: bytes
    code: bytes
    encoding: str
    reducers: int
    blocks: list[SampleBlock]


@dataclass
class SampleOutcome:
    boundaries: bytes = b""  # the boundaries file: the encoded array of keys
    keys: int = 0            # how many keys the sample held
    failure: Failure | None = None


def run_sample(req: SampleRequest) -> SampleOutcome:
    """A TotalOrder job's boundaries: map the sampled blocks' whole lines, and
    take the quantiles of the keys (spec section 6.3).

    Runs for the master in a fresh process, from the same code bytes the
    peers run, so the sample's keys are the keys the map tasks will yield.
    """
    doing = _Doing("map", WorkerLimits(None, None))
    prepared = _prepare(req.code_cid, req.code, req.encoding, True, doing.limits)
    if isinstance(prepared, Failure):
        return SampleOutcome(failure=prepared)
    job, codec = prepared
    doing.job = job
    if not isinstance(job.partition, TotalOrder):
        return SampleOutcome(failure=Failure(ErrorCode.BAD_JOB, "the job's partition is not a "
                                             "TotalOrder, so it samples nothing"))
    keys: list[Any] = []
    try:
        for block in req.blocks:
            records, _, _ = block_records(block.path, block.data, block.offset, block.first,
                                          block.last)
            keys.extend(key for key, _ in _map_pairs(job, records))
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return SampleOutcome(failure=_user_failure(exc, doing))
    try:
        boundaries = boundaries_of(keys, req.reducers)
        return SampleOutcome(codec.dumps(boundaries), len(keys))
    except EncodingError as exc:  # a key that cannot travel
        for key in boundaries:
            try:
                codec.dumps(key)
            except EncodingError as cause:
                error = unencodable(codec, "map", cause, key, is_key=True)
                error.__cause__ = cause  # its traceback, for the DEBUG log
                return SampleOutcome(failure=_user_failure(error, doing))
        return SampleOutcome(failure=Failure(ErrorCode.USER_CODE_ERROR, str(exc)))
    except TypeError as exc:  # keys that do not compare
        return SampleOutcome(failure=Failure(ErrorCode.USER_CODE_ERROR, str(exc)))


def _map_pairs(job: Job, records: Iterable[tuple[Any, str]]) -> Iterable[tuple[Any, Any]]:
    """What the job's map emits for these records: map_batch's, or map's per record."""
    if not job.record_keys:  # the job asked not to see where lines lie
        records = ((None, value) for _, value in records)
    if job.map_batch is not None:
        return job.map_batch(records)
    assert job.map is not None
    map_fn = job.map
    return chain.from_iterable(map_fn(k, v) for k, v in records)


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
    doing.combine, doing.job = job.combine is not None, job
    out = MapOutcome()
    partition = _partitioner(job, codec, req)
    if isinstance(partition, Failure):
        out.failure = partition
        return out
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
            partitions, out.records_out, _ = group_pairs(
                _map_pairs(job, records), codec, req.reducers, job.combine, partition)
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


@contextlib.contextmanager
def _scratch(req: ReduceRequest, store: FlatFS | None) -> Iterator[Path]:
    """A directory for spill files, removed however the task ends.

    Under the repo when there is one (the disk the peer was given for data),
    else the system's temporary directory. A worker killed on cancel cannot
    clean up; the peer removes its own scratch directory then.
    """
    parent = req.spill_dir or (str(store.root / SCRATCH) if store is not None else None)
    if parent is not None:
        os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"reduce-{os.getpid()}-", dir=parent)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_scratch(root: Path) -> None:
    """Remove scratch directories whose process is gone (killed, say, mid-task)."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        try:
            pid = int(entry.name.split("-")[1])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:  # alive, but another user's
            continue


def _openers(req: ReduceRequest, codec: Codec, store: FlatFSReader | None, counter: Counter
             ) -> list[Opener]:
    """How to open each input as a run, in the order of the map tasks."""
    streamed = codec is MSGPACK

    def from_store(raw: bytes) -> Run:
        assert store is not None
        pieces = iter_file_sync(lambda c: _read_block(store, c), CID.from_bytes(raw))
        if streamed:
            return read_run(ChunkReader(pieces), counter=counter)
        return decoded_run(codec, b"".join(pieces), counter)

    def from_file(path: str) -> Run:
        if not streamed:
            with open(path, "rb") as handle:
                return decoded_run(codec, handle.read(), counter)
        return _file_run(path, counter)

    def from_bytes(data: bytes) -> Run:
        if streamed:
            return read_run(io.BytesIO(data), counter=counter)
        return decoded_run(codec, data, counter)

    if req.input_files:
        return [partial(from_file, path) for path in req.input_files]
    if store is not None:
        return [partial(from_store, raw) for raw in req.inputs]
    return [partial(from_bytes, data) for data in req.inputs]


def _file_run(path: str, counter: Counter) -> Run:
    with open(path, "rb") as handle:
        yield from read_run(handle, counter=counter)


class _OutputSink:
    """Where the output's blocks go as the streaming importer makes them."""

    def __init__(self, store: FlatFS | None, inline_limit: int) -> None:
        self.store = store
        self.inline_limit = inline_limit
        self.output = Output(stored=store is not None)
        self._inline: int | None = 0

    def __call__(self, cid: CID, block: bytes) -> None:
        raw = bytes(cid)
        self.output.cids.append(raw)
        if self.store is None:
            self.output.blocks.append((raw, block))
            return
        self.store.write(cid, block)
        if self._inline is not None:  # all blocks travel inline, or none do
            self._inline += len(block)
            if self._inline <= self.inline_limit:
                self.output.blocks.append((raw, block))
            else:
                self.output.blocks.clear()
                self._inline = None


def _run_reduce(req: ReduceRequest, doing: _Doing) -> ReduceOutcome:
    prepared = _prepare(req.code_cid, req.code, req.encoding, req.allow_pickle, req.limits)
    if isinstance(prepared, Failure):
        return ReduceOutcome(failure=prepared)
    job, codec = prepared
    doing.combine = job.combine is not None
    out = ReduceOutcome()
    store = FlatFS(req.store) if req.store else None
    reader = _reader(req.store, req.read_stores)
    counter = Counter()
    with _scratch(req, store) as scratch:
        try:
            with _cpu_budget(req.limits.cpu_seconds):
                _reduce_all(req, job, codec, _openers(req, codec, reader, counter), scratch,
                            store, out)
        except CorruptBlock as exc:
            out.failure = _input_failure(exc)
        except (MalformedInput, UnixFSError, CIDError) as exc:
            out.failure = Failure(ErrorCode.BAD_REQUEST, f"malformed map output: {exc}")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            out.failure = _user_failure(exc, doing)
    out.records_in = counter.values
    return out


def _reduce_all(req: ReduceRequest, job: Job, codec: Codec,
                openers: list[Opener], scratch: Path,
                store: FlatFS | None, out: ReduceOutcome) -> None:
    """Merge the inputs, run reduce on each key, write the sorted output."""
    limits = req.limits
    groups = merge_runs(openers, scratch if codec is MSGPACK else None, limits.reduce_fan_in)
    sorter = OutputSorter(limits.reduce_memory, scratch)
    add = sorter.add
    reduce_fn = job.reduce
    loads = codec.loads
    for kb, values in groups:
        out.keys += 1
        for pair in reduce_fn(loads(kb), values):
            try:
                rk, rv = pair
            except (TypeError, ValueError):
                raise TypeError(f"reduce must yield (key, value) pairs, got {pair!r}"
                                ) from None
            add(rk, rv)
    made: list[tuple[_OutputSink, StreamImporter]] = []

    def restart() -> Callable[[bytes], None]:
        sink = _OutputSink(store, req.inline_output)
        made[:] = [(sink, StreamImporter(sink, ImportOptions(cid_version=req.cid_version)))]
        return made[0][1].write

    sorter.write_to(restart)
    sink, importer = made[0]
    out.cid = bytes(importer.finish())
    out.output = sink.output
    out.records_out = sorter.pairs
    out.size = importer.size


def worker_pid() -> int:
    """For tests: which process ran this."""
    return os.getpid()

