"""The exception hierarchy.

Every error p2pmr raises on purpose derives from :class:`P2PMRError`, so a
caller can catch one type at the boundary of its program and still tell the
cases apart below it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = [
    "collapse",
    "collapsed",
    "BlockNotFound",
    "BlockTooLarge",
    "BlockVerificationError",
    "CIDError",
    "CorruptBlock",
    "DagPBError",
    "EncodingError",
    "JobError",
    "JobFailed",
    "KuboError",
    "LimitExceeded",
    "NodeError",
    "NotAuthorised",
    "P2PMRError",
    "ProtocolError",
    "RemoteTaskError",
    "StorageError",
    "UnencodableRecord",
    "UnixFSError",
    "UnsupportedVersion",
    "UnverifiableOutput",
]


class P2PMRError(Exception):
    """Root of every error p2pmr raises deliberately."""


class NodeError(P2PMRError):
    """A node could not start, reach a peer or serve: a repo in use, a bad
    address or key, a peer that cannot be dialled or did not start."""


class CIDError(P2PMRError, ValueError):
    """A string or byte sequence is not a CID this system understands."""


class StorageError(P2PMRError):
    """The block store could not complete an operation."""


class BlockNotFound(StorageError, LookupError):
    """No reachable store could produce the block before the deadline."""

    def __init__(self, cid: object, detail: str = "") -> None:
        self.cid = cid
        message = f"block {cid} not found"
        if detail:
            message += f": {detail}"
        super().__init__(message)


class CorruptBlock(BlockNotFound):
    """A stored block no longer hashes to its CID (a bad disk, an edited file).

    The bad copy was moved aside, so the block now counts as missing and is
    fetched again from peers that have it; ``path`` is where it lay.
    """

    def __init__(self, cid: object, path: object, moved_to: object = None,
                 also: str = "") -> None:
        self.path = path
        self.moved_to = moved_to
        detail = f"the copy at {path} is corrupt (its bytes do not hash to its CID)"
        if moved_to is not None:
            detail += f"; it was moved to {moved_to}"
        if also:
            detail += f"; {also}"
        super().__init__(cid, detail)


class BlockVerificationError(StorageError):
    """Bytes received for a CID do not hash to that CID; they were discarded."""


class BlockTooLarge(StorageError):
    """A block exceeds the size limit of the store or of the exchange."""


class KuboError(StorageError):
    """The IPFS daemon behind the Kubo backend failed or is unsuitable."""


class UnixFSError(P2PMRError):
    """A DAG is not the UnixFS structure the operation expects."""


class DagPBError(UnixFSError):
    """A block is not well-formed dag-pb, the node format UnixFS is built on."""


class EncodingError(P2PMRError, TypeError):
    """A value cannot be carried by the non-executable data encoding."""


class UnencodableRecord(EncodingError):
    """A job's map or combine yielded a key or value its encoding cannot carry.

    The message says it all in one line (the key, the type at fault, the way
    out), since the traceback of where it was found shows only p2pmr's own
    encoder: the job's generator had moved on by then. ``function`` is the
    job function that yielded it ("map" or "combine") and ``detail`` the
    rest of the message, so that a worker can name where that function is.
    """

    def __init__(self, function: str, detail: str) -> None:
        super().__init__(f"{function} {detail}")
        self.function = function
        self.detail = detail


class ProtocolError(P2PMRError):
    """A remote peer sent something the wire protocol does not allow."""


class UnsupportedVersion(ProtocolError):
    """A frame of another major version of the protocol."""


class JobError(P2PMRError):
    """A job is malformed: its code, its input or its settings."""


class JobFailed(P2PMRError):
    """A job cannot finish; the message says which task failed and why.

    The subclasses say why more precisely, for callers that act on it.
    """

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        self.remote_traceback = remote_traceback
        text = message
        if remote_traceback:
            text += "\n\nRemote traceback:\n" + remote_traceback.rstrip()
        super().__init__(text)


class RemoteTaskError(JobFailed):
    """The job's code raised on the peers, every time it was tried.

    ``remote_traceback`` holds the traceback as the peer saw it: the job's
    own frames, with the job file's name and lines.
    """


class LimitExceeded(JobFailed):
    """A task needed more than a peer's limits allow (memory, CPU, time,
    input size, disk); the message names the limit and the ways out."""


class UnverifiableOutput(P2PMRError):
    """An output cannot be checked: it has no readable provenance record, or
    was computed by a runtime other than this one."""


class NotAuthorised(JobFailed):
    """Every peer that could run the job refused this master as untrusted;
    the message says how to make a peer trust it."""


def collapse(group: BaseException) -> BaseException:
    """The one meaningful error inside a (nested) trio exception group.

    A failure in one task of a nursery cancels its siblings, so the group
    usually holds one real error (or several of one kind, from siblings that
    failed at once); raising that one keeps our API's errors catchable as
    themselves. Anything else is returned unchanged.
    """
    if not isinstance(group, BaseExceptionGroup):
        return group
    # No trio imported, no trio.Cancelled to skip (worker processes do without it).
    trio = sys.modules.get("trio")
    cancelled = trio.Cancelled if trio is not None else ()
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, cancelled):
            leaves.append(exc)

    walk(group)
    for leaf in leaves:
        # One kind of failure, raised by several siblings at once (a
        # CorruptBlock beside a BlockNotFound is one kind: a missing block).
        if all(isinstance(exc, type(leaf)) for exc in leaves):
            return leaf
    ours = [exc for exc in leaves if isinstance(exc, P2PMRError)]
    return ours[0] if len(ours) == 1 else group


@contextlib.contextmanager
def collapsed() -> Iterator[None]:
    """Around a nursery inside a helper: its one real error leaves as itself.

    trio wraps errors from nursery children in exception groups, which an
    ``except BlockNotFound`` up the stack does not catch; a helper that
    happens to use a nursery must not change what its callers see.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        raise collapse(group) from None
