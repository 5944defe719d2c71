"""Checking a peer's answer before it counts.

A result is accepted only once it is consistent with the task. Inline
blocks are checked against their CIDs and kept. A reduce task's part file
is fetched into the master's store before it counts: it is the job's
output. A map task's partitions stay on the peer that made them, unless
the job keeps a second copy here (``replicas=2``); spec section 7.
Anything else fails the attempt, with what the failure says about the peer.
"""

from __future__ import annotations

import functools

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import BlockNotFound, P2PMRError, collapsed
from ..records import BlockEdges, SplitInfo
from ..storage.base import BlockStore, Fetcher, fetch_dag
from ..storage.cid import CID
from ..wire.codes import ErrorCode
from ..wire.messages import Block, Error, MapResult, ReduceResult
from .outputs import MapOutput, ReduceOutput
from .scheduler import FailureKind

__all__ = ["AttemptFailed", "Results", "failure_of"]


class AttemptFailed(Exception):
    """One attempt failed; ``kind`` and the flags say what it tells about its peer."""

    def __init__(self, kind: FailureKind, message: str, traceback: str = "",
                 blame: bool = True, exclude: bool = False,
                 code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.blame = blame      # the peer's fault: charge it
        self.exclude = exclude  # and never ask it again in this job
        self.code = code        # the peer's error code, if it sent one


def failure_of(error: Error) -> AttemptFailed:
    """A peer's error, classified (spec section 4.1)."""
    code = error.code
    text = error.describe()
    kind, blame, exclude = FailureKind.INFRA, True, False
    if code in (ErrorCode.USER_CODE_ERROR, ErrorCode.LIMIT_EXCEEDED, ErrorCode.BAD_JOB):
        kind, blame = FailureKind.USER, False
    elif code is ErrorCode.WORKER_DIED:
        kind, blame = FailureKind.WORKER, False
    elif code in (ErrorCode.NOT_AUTHORISED, ErrorCode.UNSUPPORTED_VERSION):
        exclude = True
    if code is ErrorCode.BAD_JOB and error.id is None:
        # A whole assignment refused because the job cannot run on that peer
        # (code pickled for another Python): no task of it ever will there.
        exclude = True
    elif code is ErrorCode.INPUT_NOT_FOUND:
        kind, blame = FailureKind.INPUT, False
    elif code is ErrorCode.BUSY:
        kind, blame = FailureKind.BUSY, False
    # Anything else, CANCELLED included, is the peer's fault: the master drops
    # a task it cancels and never reads an answer for it, so a CANCELLED it
    # does read is the peer giving up on its own.
    return AttemptFailed(kind, text, error.traceback, blame=blame, exclude=exclude, code=code)


class Results:
    """Accepts map and reduce results into the master's store."""

    def __init__(self, blocks: BlockStore, reducers: int, fetch_timeout: float, *,
                 keep_map_outputs: bool = False) -> None:
        self.blocks = blocks
        self.reducers = reducers
        self.fetch_timeout = fetch_timeout
        self.keep_map_outputs = keep_map_outputs

    async def map(self, work: object, result: MapResult, peer: PeerID) -> MapOutput:
        if len(result.partitions) != self.reducers or \
                len(result.partition_records) != self.reducers:
            raise AttemptFailed(FailureKind.INFRA, f"peer returned {len(result.partitions)} "
                                f"partitions for {self.reducers} reducers")
        # Map outputs stay on the peer that made them; blocks sent inline
        # anyway (by a peer of revision r2) are checked, and kept only when
        # the job keeps a copy of every map output here.
        await self._take_inline(result.blocks, keep=self.keep_map_outputs)
        local = self.keep_map_outputs
        if local:
            with collapsed():
                async with trio.open_nursery() as nursery:
                    for cid in result.partitions:
                        if cid is not None:
                            nursery.start_soon(functools.partial(
                                self._replicate, cid, peer, pin=True))
        output = MapOutput(list(result.partitions), list(result.partition_records),
                           result.records_in, result.records_out,
                           timings=result.timings.seconds(), holders=[peer], local=local)
        if isinstance(work, SplitInfo):
            edges = BlockEdges(result.head.length, result.tail.length, result.no_newline)
            if edges.head > work.size or edges.tail > work.size or \
                    (edges.no_newline and edges.head != work.size):
                raise AttemptFailed(FailureKind.INFRA, "peer returned impossible fragments")
            output.edges = edges
            output.head, output.tail = result.head.data, result.tail.data
            if (output.head is not None and len(output.head) != edges.head) or \
                    (output.tail is not None and len(output.tail) != edges.tail):
                raise AttemptFailed(FailureKind.INFRA, "peer returned inconsistent fragments")
        return output

    async def reduce(self, result: ReduceResult, peer: PeerID) -> ReduceOutput:
        await self._take_inline(result.blocks)
        # Kept in this repo now, not at the end: found in a local peer's
        # store (read in place), the part file would go when that peer does.
        await self._replicate(result.output, peer, pin=True)
        return ReduceOutput(result.output, result.records_in, result.keys, result.records_out,
                            result.bytes, timings=result.timings.seconds())

    async def _take_inline(self, blocks: tuple[Block, ...], *, keep: bool = True) -> None:
        """Check blocks sent with a result against their CIDs; store them if ``keep``."""
        for block in blocks:
            if not block.cid.verify(block.data):
                raise AttemptFailed(FailureKind.INFRA, f"peer sent bytes that are not "
                                    f"{block.cid}")
        if keep:
            await self.blocks.put_many([(b.cid, b.data) for b in blocks])

    async def _replicate(self, cid: CID, peer: PeerID, *, pin: bool = False) -> None:
        """Fetch an output into this store; ``pin`` keeps it there, copied out
        of a local peer's store (read in place) that goes when the peer does."""
        try:
            await fetch_dag(Fetcher(self.blocks, self.fetch_timeout, [peer]), cid,
                            timeout=self.fetch_timeout)
            if pin:
                await self.blocks.pin(cid, recursive=True, timeout=self.fetch_timeout)
        except BlockNotFound as exc:
            raise AttemptFailed(FailureKind.INFRA, f"could not fetch the output {cid} from "
                                f"the peer: {exc}") from None
        except P2PMRError as exc:
            raise AttemptFailed(FailureKind.INFRA, f"output {cid} is malformed: {exc}") \
                from None
