"""The protocol's error codes, as one enum for the peer and its workers.

Worker processes import this, not the generated protobuf module: they stay
light. A test checks that the values match ``mapreduce.proto``.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode"]


class ErrorCode(enum.IntEnum):
    """Why a peer refused an assignment or failed a task (spec section 4.1)."""

    ERROR_UNSPECIFIED = 0
    BAD_REQUEST = 1          # malformed or unsupported frame
    NOT_AUTHORISED = 2       # the sender is not a trusted master
    UNSUPPORTED_VERSION = 3
    INPUT_NOT_FOUND = 4      # input, code or partition could not be fetched
    USER_CODE_ERROR = 5      # the job's code raised; traceback attached
    WORKER_DIED = 6          # the worker process running the task died
    LIMIT_EXCEEDED = 7       # a size, time, memory, CPU or disk limit
    BUSY = 8                 # too many tasks from this master right now
    INTERNAL = 9
    CANCELLED = 10
    BAD_JOB = 11             # the job code cannot be loaded

    @classmethod
    def named(cls, value: int) -> str:
        """The code's name, or "error N" for a code this version does not know."""
        try:
            return cls(value).name
        except ValueError:
            return f"error {value}"
