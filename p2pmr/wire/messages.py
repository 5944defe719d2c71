"""The protocol's messages as typed values, and their protobuf encoding.

Everything that crosses the wire is one of the dataclasses here. Decoding
turns the generated protobuf classes into them and checks what protobuf
cannot: that every CID is a CID and every peer ID a peer ID, that a oneof is
set. So code outside this package deals in :class:`~p2pmr.storage.cid.CID`
and :class:`Phase`, never in bytes fields, and never touches the generated
module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from google.protobuf.message import DecodeError
from libp2p.peer.id import ID as PeerID

from ..errors import CIDError, ProtocolError, UnsupportedVersion
from ..storage.cid import CID
from ._pb import mapreduce_pb2 as pb
from .codes import ErrorCode

__all__ = ["Accepted", "Assignment", "Block", "Cancel", "Error", "Fragment", "JobSpec",
           "MapResult", "MapTask", "Message", "Phase", "Progress", "ReduceResult",
           "ReduceTask", "Split", "TaskId", "TaskTimings", "VERSION", "decode", "encode"]

VERSION: Final = 1


class Phase(enum.IntEnum):
    MAP = 1
    REDUCE = 2


@dataclass(frozen=True, slots=True)
class TaskId:
    """One attempt at one task; equal (job, phase, index) means equal work."""

    job: CID
    phase: Phase
    index: int
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class JobSpec:
    job: CID            # the job descriptor
    code: CID           # the job code
    reducers: int
    encoding: str = "msgpack"
    cid_version: int = 0
    runtime: str = ""   # what the code was pickled for (see p2pmr.job.runtime)
    boundaries: CID | None = None  # sampled range boundaries, for a TotalOrder job


@dataclass(frozen=True, slots=True)
class Split:
    """A run of consecutive leaf blocks of one input file."""

    block: CID
    path: str
    offset: int
    size: int
    first: bool
    last: bool
    more: tuple[CID, ...] = ()   # the run's further blocks
    sizes: tuple[int, ...] = ()  # file bytes per block; () for a run of one block

    @property
    def blocks(self) -> tuple[CID, ...]:
        return (self.block, *self.more)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return self.sizes or (self.size,)


@dataclass(frozen=True, slots=True)
class MapTask:
    """Map one split, or one records file of lines joined across block edges."""

    id: TaskId
    split: Split | None = None
    records: CID | None = None


@dataclass(frozen=True, slots=True)
class ReduceTask:
    id: TaskId
    partition: int
    inputs: tuple[CID, ...] = ()
    inputs_list: CID | None = None  # a file listing the inputs, when there are many


@dataclass(frozen=True, slots=True)
class Assignment:
    job: JobSpec
    heartbeat_ms: int = 0
    providers: tuple[PeerID, ...] = ()
    maps: tuple[MapTask, ...] = ()
    reduces: tuple[ReduceTask, ...] = ()
    # Binary multiaddrs (ending in /p2p/<peer ID>) at which to dial providers:
    # map outputs live on the peers that made them, not on the master.
    provider_addrs: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    queued: int = 0


@dataclass(frozen=True, slots=True)
class Progress:
    records: int = 0
    running: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Block:
    """A block sent with a result; the receiver checks it against its CID."""

    cid: CID
    data: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """A line fragment at a block edge; its bytes when short enough to send."""

    length: int = 0
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class TaskTimings:
    fetch_ms: int = 0
    queue_ms: int = 0
    compute_ms: int = 0
    store_ms: int = 0

    def seconds(self) -> dict[str, float]:
        return {"fetch": self.fetch_ms / 1000, "queue": self.queue_ms / 1000,
                "compute": self.compute_ms / 1000, "store": self.store_ms / 1000}


@dataclass(frozen=True, slots=True)
class MapResult:
    id: TaskId
    partitions: tuple[CID | None, ...]   # per reducer; None: no records
    partition_records: tuple[int, ...]
    head: Fragment = field(default_factory=Fragment)
    tail: Fragment = field(default_factory=Fragment)
    no_newline: bool = False
    records_in: int = 0
    records_out: int = 0
    timings: TaskTimings = field(default_factory=TaskTimings)
    blocks: tuple[Block, ...] = ()


@dataclass(frozen=True, slots=True)
class ReduceResult:
    id: TaskId
    output: CID
    records_in: int = 0
    keys: int = 0
    records_out: int = 0
    bytes: int = 0
    timings: TaskTimings = field(default_factory=TaskTimings)
    blocks: tuple[Block, ...] = ()


@dataclass(frozen=True, slots=True)
class Error:
    """A refusal of a whole assignment (no ``id``) or the failure of one task."""

    code: ErrorCode
    message: str
    traceback: str = ""
    id: TaskId | None = None

    def __post_init__(self) -> None:
        # Bounded, as the spec says: a message is for people, not for data.
        object.__setattr__(self, "message", self.message[:4000])
        object.__setattr__(self, "traceback", self.traceback[-60000:])

    def describe(self) -> str:
        return f"{self.code.name}: {self.message}"


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop one task (``id``) or every task of the assignment."""

    reason: str = ""
    id: TaskId | None = None


Message: TypeAlias = (Assignment | Accepted | Progress | MapResult | ReduceResult | Error
                      | Cancel)


# -- encoding ---------------------------------------------------------------------------


def _task_id(value: TaskId) -> pb.TaskId:
    return pb.TaskId(job=bytes(value.job), phase=int(value.phase),  # type: ignore[arg-type]
                     index=value.index, attempt=value.attempt)


def _timings(value: TaskTimings) -> pb.TaskTimings:
    return pb.TaskTimings(fetch_ms=value.fetch_ms, queue_ms=value.queue_ms,
                          compute_ms=value.compute_ms, store_ms=value.store_ms)


def _fragment(value: Fragment) -> pb.Fragment:
    return pb.Fragment(length=value.length, data=value.data or b"",
                       inline=value.data is not None)


def _blocks(values: tuple[Block, ...]) -> list[pb.Block]:
    return [pb.Block(cid=bytes(b.cid), data=b.data) for b in values]


def _map_task(value: MapTask) -> pb.MapTask:
    task = pb.MapTask(id=_task_id(value.id))
    if value.split is not None:
        s = value.split
        task.split.CopyFrom(pb.Split(block=bytes(s.block), path=s.path, offset=s.offset,
                                     size=s.size, first=s.first, last=s.last,
                                     more=[bytes(c) for c in s.more], sizes=s.sizes))
    elif value.records is not None:
        task.records = bytes(value.records)
    return task


def _reduce_task(value: ReduceTask) -> pb.ReduceTask:
    task = pb.ReduceTask(id=_task_id(value.id), partition=value.partition,
                         inputs=[bytes(c) for c in value.inputs])
    if value.inputs_list is not None:
        task.inputs_list = bytes(value.inputs_list)
    return task


def encode(message: Message) -> bytes:
    """A message as one frame's payload (without the length prefix)."""
    frame = pb.Frame(version=VERSION)
    if isinstance(message, Assignment):
        job = message.job
        frame.assignment.CopyFrom(pb.Assignment(
            job=pb.JobSpec(job=bytes(job.job), code=bytes(job.code), reducers=job.reducers,
                           encoding=job.encoding, cid_version=job.cid_version,
                           runtime=job.runtime,
                           boundaries=bytes(job.boundaries) if job.boundaries else b""),
            heartbeat_ms=message.heartbeat_ms,
            providers=[p.to_bytes() for p in message.providers],
            maps=[_map_task(t) for t in message.maps],
            reduces=[_reduce_task(t) for t in message.reduces],
            provider_addrs=list(message.provider_addrs)))
    elif isinstance(message, Accepted):
        frame.accepted.CopyFrom(pb.Accepted(queued=message.queued))
    elif isinstance(message, Progress):
        frame.progress.CopyFrom(pb.Progress(records=message.records,
                                            running=list(message.running)))
    elif isinstance(message, MapResult):
        frame.map_result.CopyFrom(pb.MapResult(
            id=_task_id(message.id),
            partitions=[bytes(c) if c is not None else b"" for c in message.partitions],
            partition_records=list(message.partition_records),
            head=_fragment(message.head), tail=_fragment(message.tail),
            no_newline=message.no_newline, records_in=message.records_in,
            records_out=message.records_out, timings=_timings(message.timings),
            blocks=_blocks(message.blocks)))
    elif isinstance(message, ReduceResult):
        frame.reduce_result.CopyFrom(pb.ReduceResult(
            id=_task_id(message.id), output=bytes(message.output),
            records_in=message.records_in, keys=message.keys,
            records_out=message.records_out, bytes=message.bytes,
            timings=_timings(message.timings), blocks=_blocks(message.blocks)))
    elif isinstance(message, Error):
        error = pb.Error(code=int(message.code), message=message.message,  # type: ignore[arg-type]
                         traceback=message.traceback)
        if message.id is not None:
            error.id.CopyFrom(_task_id(message.id))
        frame.error.CopyFrom(error)
    elif isinstance(message, Cancel):
        cancel = pb.Cancel(reason=message.reason)
        if message.id is not None:
            cancel.id.CopyFrom(_task_id(message.id))
        frame.cancel.CopyFrom(cancel)
    else:  # pragma: no cover - the type says it cannot happen
        raise TypeError(f"not a protocol message: {message!r}")
    data: bytes = frame.SerializeToString()
    return data


# -- decoding ---------------------------------------------------------------------------


def _cid(raw: bytes, what: str) -> CID:
    try:
        return CID.from_bytes(bytes(raw))
    except CIDError as exc:
        raise ProtocolError(f"{what} is not a CID: {exc}") from None


def _peer(raw: bytes) -> PeerID:
    try:
        peer = PeerID(bytes(raw))
        peer.to_base58()
    except Exception as exc:
        raise ProtocolError(f"a provider is not a peer ID: {exc}") from None
    return peer


def _from_task_id(msg: pb.TaskId) -> TaskId:
    try:
        phase = Phase(msg.phase)
    except ValueError:
        raise ProtocolError(f"unknown task phase {msg.phase}") from None
    return TaskId(_cid(msg.job, "a task's job"), phase, msg.index, msg.attempt)


def _from_timings(msg: pb.TaskTimings) -> TaskTimings:
    return TaskTimings(msg.fetch_ms, msg.queue_ms, msg.compute_ms, msg.store_ms)


def _from_fragment(msg: pb.Fragment) -> Fragment:
    return Fragment(msg.length, bytes(msg.data) if msg.inline else None)


def _from_blocks(msgs: object) -> tuple[Block, ...]:
    return tuple(Block(_cid(b.cid, "a sent block's CID"), bytes(b.data))
                 for b in msgs)  # type: ignore[attr-defined]


def _from_map_task(msg: pb.MapTask) -> MapTask:
    which = msg.WhichOneof("input")
    task_id = _from_task_id(msg.id)
    if which == "split":
        s = msg.split
        more = tuple(_cid(c, "a split's block") for c in s.more)
        return MapTask(task_id, split=Split(_cid(s.block, "a split's block"), s.path, s.offset,
                                            s.size, s.first, s.last, more, tuple(s.sizes)))
    if which == "records":
        return MapTask(task_id, records=_cid(msg.records, "a records file"))
    raise ProtocolError(f"map task {msg.id.index} has no input")


def _from_reduce_task(msg: pb.ReduceTask) -> ReduceTask:
    return ReduceTask(
        _from_task_id(msg.id), msg.partition,
        tuple(_cid(c, "a reduce input") for c in msg.inputs),
        _cid(msg.inputs_list, "an input list") if msg.inputs_list else None)


def _from_error(msg: pb.Error) -> Error:
    try:
        code = ErrorCode(msg.code)
    except ValueError:
        code = ErrorCode.ERROR_UNSPECIFIED
    return Error(code, msg.message, msg.traceback,
                 _from_task_id(msg.id) if msg.HasField("id") else None)


def decode(payload: bytes) -> Message:
    """A frame's payload as a message.

    Raises :class:`~p2pmr.errors.UnsupportedVersion` for another major
    version and :class:`~p2pmr.errors.ProtocolError` for anything malformed,
    or a body this version does not know.
    """
    frame = pb.Frame()
    try:
        frame.ParseFromString(payload)
    except DecodeError as exc:
        raise ProtocolError(f"malformed frame: {exc}") from None
    if frame.version != VERSION:
        raise UnsupportedVersion(f"this peer speaks version {VERSION}, not {frame.version}")
    kind = frame.WhichOneof("body")
    if kind == "assignment":
        a = frame.assignment
        job = a.job
        return Assignment(
            JobSpec(_cid(job.job, "the job"), _cid(job.code, "the job code"), job.reducers,
                    job.encoding or "msgpack", job.cid_version, job.runtime,
                    _cid(job.boundaries, "the partition boundaries") if job.boundaries
                    else None),
            a.heartbeat_ms, tuple(_peer(p) for p in a.providers),
            tuple(_from_map_task(t) for t in a.maps),
            tuple(_from_reduce_task(t) for t in a.reduces),
            tuple(bytes(addr) for addr in a.provider_addrs))
    if kind == "accepted":
        return Accepted(frame.accepted.queued)
    if kind == "progress":
        return Progress(frame.progress.records, tuple(frame.progress.running))
    if kind == "map_result":
        r = frame.map_result
        return MapResult(
            _from_task_id(r.id),
            tuple(_cid(c, "a partition") if c else None for c in r.partitions),
            tuple(r.partition_records), _from_fragment(r.head), _from_fragment(r.tail),
            r.no_newline, r.records_in, r.records_out, _from_timings(r.timings),
            _from_blocks(r.blocks))
    if kind == "reduce_result":
        r2 = frame.reduce_result
        return ReduceResult(
            _from_task_id(r2.id), _cid(r2.output, "a reduce output"), r2.records_in, r2.keys,
            r2.records_out, r2.bytes, _from_timings(r2.timings), _from_blocks(r2.blocks))
    if kind == "error":
        return _from_error(frame.error)
    if kind == "cancel":
        c = frame.cancel
        return Cancel(c.reason, _from_task_id(c.id) if c.HasField("id") else None)
    raise ProtocolError(f"a frame with {kind or 'a body this version does not know'}")
