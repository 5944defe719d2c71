"""When a peer cannot fetch a task's input: is the master's own copy bad?

The master is where inputs and records files come from (map outputs come
from the peers that made them, and a lost one is :mod:`.intermediates`'s). A block
of the task's inputs that turned out corrupt here has been set aside; an
intact copy is fetched from peers, and if none has one, no retry can
succeed: the job says so at once, naming the block, rather than after every
attempt has timed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import BlockNotFound, JobFailed
from ..records import SplitInfo
from ..storage.base import BlockStore
from ..storage.cid import CID
from .plan import BoundaryWork, ReduceWork
from .scheduler import Task

__all__ = ["check_inputs", "inputs_of"]


def inputs_of(task: Task, code: CID | None) -> Iterator[CID]:
    """The roots of every DAG a task's peer fetches from the master."""
    if code is not None:
        yield code
    work = task.payload
    if isinstance(work, SplitInfo):
        yield from work.blocks
    elif isinstance(work, BoundaryWork) and work.records is not None:
        yield work.records
    elif isinstance(work, ReduceWork):
        yield from work.inputs
        if work.listing is not None:
            yield work.listing


async def check_inputs(blocks: BlockStore, task: Task, code: CID | None, repo: Path,
                       fetch_timeout: float) -> JobFailed | None:
    """Repair the task's corrupt inputs from peers; the failure if one cannot be."""
    if not blocks.corrupt:
        return None
    bad: set[CID] = set()
    for root in inputs_of(task, code):
        bad.update(cid for cid in await blocks.missing(root) if cid in blocks.corrupt)
    for cid in sorted(bad):
        try:
            await blocks.get(cid, timeout=fetch_timeout)
        except BlockNotFound as exc:
            return JobFailed(
                f"{task.phase} task {task.index} needs a block that is corrupt in the "
                f"master's repo, and no peer has an intact copy: {exc}. Add the input again "
                f"(`p2pmr add` repairs corrupt blocks it rewrites), and run `p2pmr repo "
                f"verify --repo {repo}` to find any other damage")
    return None
