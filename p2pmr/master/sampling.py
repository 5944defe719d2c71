"""A TotalOrder job's range boundaries, sampled from its input before the map phase.

Hadoop's InputSampler samples keys on the client and ships a partition
file; here the master does the same without randomness, so the boundaries
are a function of the code and the input (spec section 6.3): it reads up to
``TotalOrder.blocks`` evenly spaced leaf blocks, has a fresh worker process
map their whole lines with the job's code and take the quantiles of the
keys, and stores the result in IPFS. Its CID goes into the job descriptor,
and so into the job's identity, and travels to peers in ``JobSpec``.
"""

from __future__ import annotations

import logging
import time

import trio

from .. import _worker
from ..errors import BlockNotFound, JobFailed, UnixFSError, collapsed
from ..job import in_fresh_process
from ..partition import TotalOrder, sample_indices
from ..records import SplitInfo
from ..storage import unixfs
from ..storage.base import BlockStore
from ..storage.cid import CID
from .plan import InputPlan

__all__ = ["leaf_blocks", "sample_boundaries"]

log = logging.getLogger(__name__)


def leaf_blocks(plan: InputPlan) -> list[tuple[SplitInfo, int]]:
    """Every leaf block of the input in split order, as (split, index in its run)."""
    leaves = []
    for task in plan.tasks:
        split = task.payload
        if isinstance(split, SplitInfo):
            leaves += [(split, i) for i in range(len(split.blocks))]
    return leaves


async def _read(blocks: BlockStore, split: SplitInfo, i: int, timeout: float
                ) -> _worker.SampleBlock:
    cid = split.blocks[i]
    sizes = split.sizes or (split.size,)
    data = unixfs.extract_data(cid, await blocks.get(cid, timeout=timeout))
    last = i == len(sizes) - 1
    return _worker.SampleBlock(split.path, split.offset + sum(sizes[:i]), data,
                               first=split.first and i == 0, last=split.last and last)


async def sample_boundaries(blocks: BlockStore, plan: InputPlan, code: bytes, code_cid: CID,
                            order: TotalOrder, *, reducers: int, encoding: str,
                            cid_version: int, timeout: float) -> CID:
    """Sample the input, store the boundaries file, and return its CID.

    Raises :class:`JobFailed` when the sample cannot be read or the job's
    code fails on it (with the traceback, as a task's failure would be).
    """
    started = time.monotonic()
    leaves = leaf_blocks(plan) if reducers > 1 else []  # one reducer needs no boundaries
    chosen = [leaves[i] for i in sample_indices(len(leaves), order.blocks)]
    sample: list[_worker.SampleBlock | None] = [None] * len(chosen)
    limiter = trio.CapacityLimiter(8)

    async def read(n: int, split: SplitInfo, i: int) -> None:
        async with limiter:
            sample[n] = await _read(blocks, split, i, timeout)

    try:
        with trio.fail_after(timeout), collapsed():
            async with trio.open_nursery() as nursery:
                for n, (split, i) in enumerate(chosen):
                    nursery.start_soon(read, n, split, i)
    except (BlockNotFound, UnixFSError, trio.TooSlowError) as exc:
        raise JobFailed(f"cannot read the input's sample for TotalOrder: {exc!r}") from None
    request = _worker.SampleRequest(bytes(code_cid), code, encoding, reducers,
                                    [b for b in sample if b is not None])
    outcome: _worker.SampleOutcome = await in_fresh_process(_worker.run_sample, request)
    if outcome.failure is not None:
        if outcome.failure.debug:
            log.debug("sampling for TotalOrder: the worker's whole traceback:\n%s",
                      outcome.failure.debug.rstrip())
        raise JobFailed(f"sampling the input for TotalOrder failed: {outcome.failure.message}",
                        outcome.failure.traceback)
    cid = await unixfs.add_bytes(blocks, outcome.boundaries,
                                 unixfs.ImportOptions(cid_version=cid_version))
    log.info("TotalOrder: %d key(s) sampled from %d of %d block(s) in %.2fs; boundaries %s",
             outcome.keys, len(chosen), len(leaves), time.monotonic() - started, cid)
    return cid
