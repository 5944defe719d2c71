"""What a well-formed assignment is, beyond what decoding already checked.

Decoding (:mod:`.messages`) guarantees types: CIDs are CIDs, peer IDs are
peer IDs. This checks meaning, before a peer fetches or runs anything.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .messages import Assignment, MapTask, ReduceTask

__all__ = ["MAX_REDUCERS", "MAX_SPLIT_BLOCKS", "validate_assignment"]

MAX_REDUCERS = 100_000
MAX_SPLIT_BLOCKS = 4096  # 1 GiB of default 256 KiB blocks
ENCODINGS = ("msgpack", "pickle")


def validate_assignment(assignment: Assignment) -> list[MapTask | ReduceTask]:
    """The assignment's tasks, map tasks first; raises ProtocolError if malformed."""
    job = assignment.job
    if not 1 <= job.reducers <= MAX_REDUCERS:
        raise ProtocolError(f"reducers must be 1..{MAX_REDUCERS}, not {job.reducers}")
    if job.cid_version not in (0, 1):
        raise ProtocolError("cid_version must be 0 or 1")
    if job.encoding not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {job.encoding!r}")
    tasks: list[MapTask | ReduceTask] = [*assignment.maps, *assignment.reduces]
    if not tasks:
        raise ProtocolError("an assignment without tasks")
    seen: set[int] = set()
    for task in tasks:
        if task.id.index in seen:
            raise ProtocolError(f"task {task.id.index} appears twice")
        seen.add(task.id.index)
        if task.id.job != job.job:
            raise ProtocolError(f"task {task.id.index} belongs to another job")
        if isinstance(task, ReduceTask) and task.partition >= job.reducers:
            raise ProtocolError(f"reduce task {task.id.index}: partition out of range")
        if isinstance(task, MapTask) and task.split is not None:
            _check_split(task)
    return tasks


def _check_split(task: MapTask) -> None:
    split = task.split
    assert split is not None
    if len(split.blocks) > MAX_SPLIT_BLOCKS:
        raise ProtocolError(f"map task {task.id.index}: a split of {len(split.blocks)} "
                            f"blocks (at most {MAX_SPLIT_BLOCKS})")
    if split.more and len(split.sizes) != len(split.blocks):
        raise ProtocolError(f"map task {task.id.index}: {len(split.blocks)} blocks but "
                            f"{len(split.sizes)} sizes")
    if sum(split.block_sizes) != split.size:
        raise ProtocolError(f"map task {task.id.index}: block sizes add up to "
                            f"{sum(split.block_sizes)}, not the split's {split.size}")
