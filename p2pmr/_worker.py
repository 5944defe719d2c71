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
import os
import resource
import signal
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import cloudpickle
import msgpack

from .blockstore import FlatFS
from .cid import CID
from .encoding import Codec, get_codec, group_pairs
from .errors import CIDError, EncodingError, UnixFSError
from .job import Job
from .records import block_records, decode_line
from .unixfs import ImportOptions, extract_data, import_bytes, read_file_sync

__all__ = ["MapOutcome", "MapRequest", "ReduceOutcome", "ReduceRequest", "WorkerLimits",
           "encode_records", "init_worker", "run_map", "run_reduce", "should_retire"]

# Error codes, mirrored from protocols/mapreduce.proto (ErrorCode).
BAD_JOB = 11
USER_CODE_ERROR = 5
LIMIT_EXCEEDED = 7
BAD_REQUEST = 1
INPUT_NOT_FOUND = 4

_CODE_CACHE: OrderedDict[bytes, Job] = OrderedDict()
_CODE_CACHE_SIZE = 8
_RETIRE = False


@dataclass(frozen=True)
class WorkerLimits:
    """Per-task limits enforced inside the worker process."""

    memory_bytes: int | None = 2 * 1024**3   # address space of the worker process
    cpu_seconds: float | None = 600.0        # CPU time per task


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
    code: int
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
    block_cid: bytes = b""
    block: bytes = b""        # the input block, unless the worker reads it from store
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


def _user_failure(exc: BaseException, what: str) -> Failure:
    global _RETIRE
    if isinstance(exc, _CPULimit):
        _RETIRE = True
        return Failure(LIMIT_EXCEEDED, f"{what} exceeded its CPU time limit",
                       traceback.format_exc())
    if isinstance(exc, MemoryError):
        _RETIRE = True
        return Failure(LIMIT_EXCEEDED, f"{what} exceeded its memory limit",
                       traceback.format_exc())
    if isinstance(exc, EncodingError):
        return Failure(USER_CODE_ERROR, f"{what} produced data that cannot be sent: {exc}",
                       traceback.format_exc())
    return Failure(USER_CODE_ERROR, f"{what} raised {type(exc).__name__}: {exc}",
                   traceback.format_exc())


def _prepare(code_cid: bytes, code: bytes, encoding: str, allow_pickle: bool
             ) -> tuple[Job, Codec] | Failure:
    try:
        codec = get_codec(encoding, allow_pickle=allow_pickle)
    except EncodingError as exc:
        # A property of the job (its encoding), not of the request or peer.
        return Failure(BAD_JOB, str(exc))
    try:
        return _load_job(code_cid, code), codec
    except BaseException as exc:  # unpickling runs arbitrary code
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return Failure(BAD_JOB, f"cannot load the job's code: {type(exc).__name__}: {exc}",
                       traceback.format_exc())


def encode_records(records: Iterable[tuple[str, int, bytes, bool]]) -> bytes:
    """The records file of a boundary task: framework data, always msgpack."""
    data: bytes = msgpack.packb([[p, o, r, t] for p, o, r, t in records], use_bin_type=True)
    return data


def _decode_records(data: bytes) -> list[tuple[str, int, bytes, bool]]:
    items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    out = []
    for item in items:
        path, offset, raw, terminated = item
        if not (isinstance(path, str) and isinstance(offset, int) and isinstance(raw, bytes)):
            raise ValueError("malformed records file")
        out.append((path, offset, raw, bool(terminated)))
    return out


def _import(data: bytes, cid_version: int, blocks: list[tuple[bytes, bytes]]) -> bytes:
    root, made = import_bytes(data, ImportOptions(cid_version=cid_version))
    blocks.extend((bytes(c), b) for c, b in made)
    return bytes(root)


def _read_block(store: FlatFS, cid: CID) -> bytes:
    data = store.read(cid)
    if data is None:
        raise UnixFSError(f"block {cid} is not in the peer's store")
    return data


def run_map(req: MapRequest) -> MapOutcome:
    prepared = _prepare(req.code_cid, req.code, req.encoding, req.allow_pickle)
    if isinstance(prepared, Failure):
        return MapOutcome(failure=prepared)
    job, codec = prepared
    out = MapOutcome()
    store = FlatFS(req.store) if req.store else None
    try:
        if req.records:
            items = _decode_records(req.records)
            records: Iterable[tuple[Any, str]] = (
                ((p, o), decode_line(r, t)) for p, o, r, t in items)
            out.records_in = len(items)
        else:
            block_cid = CID.from_bytes(req.block_cid)
            block = req.block if req.block or store is None else _read_block(store, block_cid)
            data = extract_data(block_cid, block)
            if req.size >= 0 and len(data) != req.size:
                # Not the leaf the master resolved (an inner node, say): its
                # lines would be silently missing from the output.
                raise ValueError(f"block {block_cid} holds {len(data)} bytes of file data, "
                                 f"not the {req.size} its split names")
            records, out.records_in, edges = block_records(req.path, data, req.offset,
                                                           req.first, req.last)
            out.head_len, out.tail_len, out.no_newline = edges.head, edges.tail, edges.no_newline
            if edges.head and edges.head <= req.inline_limit:
                out.head = data[:edges.head]
            if edges.tail and edges.tail <= req.inline_limit:
                out.tail = data[len(data) - edges.tail:]
    except (UnixFSError, ValueError, msgpack.UnpackException) as exc:
        out.failure = Failure(BAD_REQUEST, f"malformed map input: {exc}")
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
        out.failure = _user_failure(exc, "map")
        return out
    made: list[tuple[bytes, bytes]] = []
    for groups, data in zip(partitions, encoded, strict=True):
        out.partitions.append(_import(data, req.cid_version, made) if data else b"")
        out.partition_records.append(sum(len(v) for _, v in groups))
    out.output.finish(store, made, req.inline_output)
    return out


def _merge_groups(runs: list[list[Any]]) -> Iterator[tuple[bytes, list[Any]]]:
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
    prepared = _prepare(req.code_cid, req.code, req.encoding, req.allow_pickle)
    if isinstance(prepared, Failure):
        return ReduceOutcome(failure=prepared)
    job, codec = prepared
    out = ReduceOutcome()
    store = FlatFS(req.store) if req.store else None
    try:
        if store is not None:
            datas = [read_file_sync(lambda c: _read_block(store, c), CID.from_bytes(raw))
                     for raw in req.inputs]
        else:
            datas = req.inputs
        runs = [codec.decode_partition(data) for data in datas]
    except (EncodingError, UnixFSError, CIDError) as exc:
        out.failure = Failure(BAD_REQUEST, f"malformed map output: {exc}")
        return out
    out.records_in = sum(len(group[1]) for run in runs for group in run)
    results: list[tuple[Any, Any]] = []
    try:
        with _cpu_budget(req.limits.cpu_seconds):
            for kb, values in _merge_groups(runs):
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
        out.failure = _user_failure(exc, "reduce")
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

