"""What a well-formed assignment is, beyond what decoding already checked.

Decoding (:mod:`.messages`) guarantees types: CIDs are CIDs, peer IDs are
peer IDs. This checks meaning, before a peer fetches or runs anything.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .messages import Assignment, MapTask, ReduceTask

__all__ = ["MAX_REDUCERS", "validate_assignment"]

MAX_REDUCERS = 100_000
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
    return tasks
