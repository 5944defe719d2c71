"""Planning a job: the input CID becomes splits, boundary groups and reduces.

Every task has one typed payload, which says what the task reads:

* :class:`~p2pmr.records.SplitInfo`, a map task over one leaf block;
* :class:`BoundaryWork`, a map task over the lines that cross a group of
  block edges of one file (ready only once those splits are mapped);
* :class:`ReduceWork`, one partition and the map outputs that feed it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import msgpack
import trio

from ..errors import BlockNotFound, CIDError, JobFailed, UnixFSError
from ..records import SplitInfo
from ..storage import unixfs
from ..storage.base import BlockStore, Fetcher
from ..storage.cid import CID
from .outputs import MapOutput
from .scheduler import Task

__all__ = ["MAP", "REDUCE", "BoundaryWork", "InputPlan", "ReduceWork", "Work", "plan_input",
           "plan_reduce", "store_input_lists"]

log = logging.getLogger(__name__)

MAP: Final = "map"
REDUCE: Final = "reduce"
_INLINE_INPUTS: Final = 2000  # more reduce inputs than this travel as a list file


@dataclass(slots=True)
class BoundaryWork:
    """The lines that end in one group of a file's block boundaries.

    Covers the boundaries after splits ``first_split``..``last_split - 1``
    of the file, i.e. splits (first_split, last_split] hold the line ends.
    """

    file: int
    group: int
    first_split: int
    last_split: int
    records: CID | None = None   # the stitched lines, once stored
    building: bool = False


@dataclass(slots=True)
class ReduceWork:
    partition: int
    inputs: list[CID]
    listing: CID | None = None  # a file listing ``inputs``, when they are many


Work: TypeAlias = SplitInfo | BoundaryWork | ReduceWork


@dataclass
class InputPlan:
    """The map phase of a job, and where each file's tasks are."""

    files: list[tuple[str, CID]]
    tasks: list[Task]
    splits: list[list[int]] = field(default_factory=list)      # per file: split task indices
    boundaries: list[list[int]] = field(default_factory=list)  # per file: boundary tasks

    def counts(self) -> dict[str, int]:
        return {"files": len(self.files), "splits": sum(len(s) for s in self.splits),
                "boundary_tasks": sum(len(b) for b in self.boundaries)}


async def plan_input(blocks: BlockStore, input_cid: CID, *, timeout: float,
                     boundary_group: int) -> InputPlan:
    """Resolve the input to its files' leaf blocks and plan the map tasks.

    Raises :class:`JobFailed` naming what is wrong with the input.
    """
    source = Fetcher(blocks, timeout)
    try:
        with trio.fail_after(timeout):
            files = await unixfs.walk_files(source, input_cid)
            segments = [await unixfs.file_segments(source, cid) for _, cid in files]
    except trio.TooSlowError:
        raise JobFailed(f"input {input_cid} could not be resolved within {timeout:g}s") \
            from None
    except BlockNotFound as exc:
        raise JobFailed(f"input {input_cid} could not be resolved: {exc}") from None
    except (UnixFSError, CIDError) as exc:
        raise JobFailed(f"input {input_cid} is not a UnixFS file or directory: {exc}") \
            from None
    plan = InputPlan(files, [])
    for file_index, ((path, _), segs) in enumerate(zip(files, segments, strict=True)):
        indices = []
        for i, seg in enumerate(segs):
            indices.append(len(plan.tasks))
            plan.tasks.append(Task(MAP, len(plan.tasks), SplitInfo(
                seg.offset, seg.size, i == 0, i == len(segs) - 1, block=seg.cid, path=path,
                file=file_index)))
        plan.splits.append(indices)
    group = max(1, boundary_group)
    for file_index, indices in enumerate(plan.splits):
        bounds = []
        for g in range(math.ceil((len(indices) - 1) / group)):
            first, last = g * group, min(len(indices) - 1, (g + 1) * group)
            bounds.append(len(plan.tasks))
            plan.tasks.append(Task(MAP, len(plan.tasks), BoundaryWork(file_index, g, first, last),
                                   ready=False))
        plan.boundaries.append(bounds)
    return plan


def plan_reduce(map_tasks: list[Task], reducers: int) -> list[Task]:
    """One reduce task per partition, fed by every map output that has records for it."""
    outputs = [t.output for t in map_tasks]
    tasks = []
    for r in range(reducers):
        inputs = [out.partitions[r] for out in outputs
                  if isinstance(out, MapOutput) and out.partitions[r] is not None]
        tasks.append(Task(REDUCE, r, ReduceWork(r, [c for c in inputs if c is not None])))
    return tasks


async def store_input_lists(tasks: list[Task], blocks: BlockStore) -> None:
    """Give a reduce with very many inputs a file listing them, so its
    assignment frame stays small."""
    for task in tasks:
        work = task.payload
        assert isinstance(work, ReduceWork)
        if work.listing is None and len(work.inputs) > _INLINE_INPUTS:
            data = msgpack.packb([bytes(c) for c in work.inputs], use_bin_type=True)
            work.listing = await unixfs.add_bytes(blocks, data)
