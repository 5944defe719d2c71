from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    MAP: _ClassVar[Phase]
    REDUCE: _ClassVar[Phase]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_UNSPECIFIED: _ClassVar[ErrorCode]
    BAD_REQUEST: _ClassVar[ErrorCode]
    NOT_AUTHORISED: _ClassVar[ErrorCode]
    UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    INPUT_NOT_FOUND: _ClassVar[ErrorCode]
    USER_CODE_ERROR: _ClassVar[ErrorCode]
    WORKER_DIED: _ClassVar[ErrorCode]
    LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    BUSY: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    CANCELLED: _ClassVar[ErrorCode]
    BAD_JOB: _ClassVar[ErrorCode]
PHASE_UNSPECIFIED: Phase
MAP: Phase
REDUCE: Phase
ERROR_UNSPECIFIED: ErrorCode
BAD_REQUEST: ErrorCode
NOT_AUTHORISED: ErrorCode
UNSUPPORTED_VERSION: ErrorCode
INPUT_NOT_FOUND: ErrorCode
USER_CODE_ERROR: ErrorCode
WORKER_DIED: ErrorCode
LIMIT_EXCEEDED: ErrorCode
BUSY: ErrorCode
INTERNAL: ErrorCode
CANCELLED: ErrorCode
BAD_JOB: ErrorCode

class Frame(_message.Message):
    __slots__ = ("version", "assignment", "accepted", "progress", "map_result", "reduce_result", "error", "cancel")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MAP_RESULT_FIELD_NUMBER: _ClassVar[int]
    REDUCE_RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    version: int
    assignment: Assignment
    accepted: Accepted
    progress: Progress
    map_result: MapResult
    reduce_result: ReduceResult
    error: Error
    cancel: Cancel
    def __init__(self, version: _Optional[int] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., map_result: _Optional[_Union[MapResult, _Mapping]] = ..., reduce_result: _Optional[_Union[ReduceResult, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job", "heartbeat_ms", "providers", "maps", "reduces", "provider_addrs")
    JOB_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    REDUCES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRS_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    heartbeat_ms: int
    providers: _containers.RepeatedScalarFieldContainer[bytes]
    maps: _containers.RepeatedCompositeFieldContainer[MapTask]
    reduces: _containers.RepeatedCompositeFieldContainer[ReduceTask]
    provider_addrs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ..., heartbeat_ms: _Optional[int] = ..., providers: _Optional[_Iterable[bytes]] = ..., maps: _Optional[_Iterable[_Union[MapTask, _Mapping]]] = ..., reduces: _Optional[_Iterable[_Union[ReduceTask, _Mapping]]] = ..., provider_addrs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TaskId(_message.Message):
    __slots__ = ("job", "phase", "index", "attempt")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job: bytes
    phase: Phase
    index: int
    attempt: int
    def __init__(self, job: _Optional[bytes] = ..., phase: _Optional[_Union[Phase, str]] = ..., index: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("job", "code", "reducers", "encoding", "cid_version", "runtime", "boundaries")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REDUCERS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CID_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    job: bytes
    code: bytes
    reducers: int
    encoding: str
    cid_version: int
    runtime: str
    boundaries: bytes
    def __init__(self, job: _Optional[bytes] = ..., code: _Optional[bytes] = ..., reducers: _Optional[int] = ..., encoding: _Optional[str] = ..., cid_version: _Optional[int] = ..., runtime: _Optional[str] = ..., boundaries: _Optional[bytes] = ...) -> None: ...

class Split(_message.Message):
    __slots__ = ("block", "path", "offset", "size", "first", "last", "more", "sizes")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    block: bytes
    path: str
    offset: int
    size: int
    first: bool
    last: bool
    more: _containers.RepeatedScalarFieldContainer[bytes]
    sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, block: _Optional[bytes] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ..., first: bool = ..., last: bool = ..., more: _Optional[_Iterable[bytes]] = ..., sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class MapTask(_message.Message):
    __slots__ = ("id", "split", "records")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    id: TaskId
    split: Split
    records: bytes
    def __init__(self, id: _Optional[_Union[TaskId, _Mapping]] = ..., split: _Optional[_Union[Split, _Mapping]] = ..., records: _Optional[bytes] = ...) -> None: ...

class ReduceTask(_message.Message):
    __slots__ = ("id", "partition", "inputs", "inputs_list")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_LIST_FIELD_NUMBER: _ClassVar[int]
    id: TaskId
    partition: int
    inputs: _containers.RepeatedScalarFieldContainer[bytes]
    inputs_list: bytes
    def __init__(self, id: _Optional[_Union[TaskId, _Mapping]] = ..., partition: _Optional[int] = ..., inputs: _Optional[_Iterable[bytes]] = ..., inputs_list: _Optional[bytes] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("queued",)
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    def __init__(self, queued: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("records", "running")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    records: int
    running: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, records: _Optional[int] = ..., running: _Optional[_Iterable[int]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("cid", "data")
    CID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    cid: bytes
    data: bytes
    def __init__(self, cid: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class Fragment(_message.Message):
    __slots__ = ("length", "data", "inline")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    length: int
    data: bytes
    inline: bool
    def __init__(self, length: _Optional[int] = ..., data: _Optional[bytes] = ..., inline: bool = ...) -> None: ...

class TaskTimings(_message.Message):
    __slots__ = ("fetch_ms", "queue_ms", "compute_ms", "store_ms")
    FETCH_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_MS_FIELD_NUMBER: _ClassVar[int]
    fetch_ms: int
    queue_ms: int
    compute_ms: int
    store_ms: int
    def __init__(self, fetch_ms: _Optional[int] = ..., queue_ms: _Optional[int] = ..., compute_ms: _Optional[int] = ..., store_ms: _Optional[int] = ...) -> None: ...

class MapResult(_message.Message):
    __slots__ = ("id", "partitions", "partition_records", "head", "tail", "no_newline", "records_in", "records_out", "timings", "blocks")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    PARTITION_RECORDS_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    NO_NEWLINE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_IN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_OUT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    id: TaskId
    partitions: _containers.RepeatedScalarFieldContainer[bytes]
    partition_records: _containers.RepeatedScalarFieldContainer[int]
    head: Fragment
    tail: Fragment
    no_newline: bool
    records_in: int
    records_out: int
    timings: TaskTimings
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, id: _Optional[_Union[TaskId, _Mapping]] = ..., partitions: _Optional[_Iterable[bytes]] = ..., partition_records: _Optional[_Iterable[int]] = ..., head: _Optional[_Union[Fragment, _Mapping]] = ..., tail: _Optional[_Union[Fragment, _Mapping]] = ..., no_newline: bool = ..., records_in: _Optional[int] = ..., records_out: _Optional[int] = ..., timings: _Optional[_Union[TaskTimings, _Mapping]] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class ReduceResult(_message.Message):
    __slots__ = ("id", "output", "records_in", "keys", "records_out", "bytes", "timings", "blocks")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_IN_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    id: TaskId
    output: bytes
    records_in: int
    keys: int
    records_out: int
    bytes: int
    timings: TaskTimings
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    def __init__(self, id: _Optional[_Union[TaskId, _Mapping]] = ..., output: _Optional[bytes] = ..., records_in: _Optional[int] = ..., keys: _Optional[int] = ..., records_out: _Optional[int] = ..., bytes: _Optional[int] = ..., timings: _Optional[_Union[TaskTimings, _Mapping]] = ..., blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("id", "code", "message", "traceback")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    id: TaskId
    code: ErrorCode
    message: str
    traceback: str
    def __init__(self, id: _Optional[_Union[TaskId, _Mapping]] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("reason", "id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    reason: str
    id: TaskId
    def __init__(self, reason: _Optional[str] = ..., id: _Optional[_Union[TaskId, _Mapping]] = ...) -> None: ...
