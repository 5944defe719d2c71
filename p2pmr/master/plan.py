"""Planning a job: the input CID becomes splits, boundary groups and reduces.

Every task has one typed payload, which says what the task reads:

* :class:`~p2pmr.records.SplitInfo`, a map task over a run of consecutive
  leaf blocks of one file (:func:`cut_runs` decides where runs end);
* :class:`BoundaryWork`, a map task over the lines that cross a group of
  block edges of one file (ready only once those splits are mapped);
* :class:`ReduceWork`, one partition and the map outputs that feed it.
"""

from __future__ import annotations

import hashlib
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

__all__ = ["MAP", "REDUCE", "BoundaryWork", "InputPlan", "ReduceWork", "Work", "cut_runs",
           "plan_input", "plan_reduce", "store_input_lists"]

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

    def total_size(self) -> int:
        """The input's bytes, as its splits cover them (the manifest leaves this out)."""
        return sum(t.payload.size for t in self.tasks if isinstance(t.payload, SplitInfo))


def cut_runs(segments: list[unixfs.Segment], target: int) -> list[list[unixfs.Segment]]:
    """Group a file's leaf blocks into runs of about ``target`` bytes.

    A map task per leaf block (256 KiB) spends more on overhead than on
    the user's code, so a split covers a run of blocks. Where a run ends is
    decided by the blocks' content, not their position: once a run holds
    ``target / 2`` bytes, it ends after a block whose multihash, hashed
    again, falls under a threshold proportional to the block's size, and it
    always ends by ``2 * target``. Runs then average ``target`` bytes, the
    same input always gives the same runs (so the same values reach reduce
    in the same order), and an edit to a file moves only the runs around
    the edit, leaving the others, and their map outputs, as they were.
    ``target`` 0 gives a run per block.
    """
    if target <= 0:
        return [[seg] for seg in segments]
    low, cap = target // 2, 2 * target
    span = target - low
    runs: list[list[unixfs.Segment]] = []
    run: list[unixfs.Segment] = []
    held = 0
    for seg in segments:
        run.append(seg)
        held += seg.size
        if held >= cap or (held >= low and _cut_after(seg, span)):
            runs.append(run)
            run, held = [], 0
    if run:
        runs.append(run)
    return runs


def _cut_after(seg: unixfs.Segment, span: int) -> bool:
    """True with probability ``size / span``, decided by the block's content."""
    draw = int.from_bytes(hashlib.sha256(seg.cid.multihash).digest()[:8], "big")
    return draw * span < seg.size << 64


def _split_of(run: list[unixfs.Segment], first: bool, last: bool, path: str, file: int
              ) -> SplitInfo:
    head, more = run[0], tuple(seg.cid for seg in run[1:])
    sizes = tuple(seg.size for seg in run) if more else ()
    return SplitInfo(head.offset, sum(seg.size for seg in run), first, last, block=head.cid,
                     path=path, file=file, more=more, sizes=sizes)


async def plan_input(blocks: BlockStore, input_cid: CID, *, timeout: float,
                     boundary_group: int, split_size: int = 0) -> InputPlan:
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
        runs = cut_runs(segs, split_size)
        for i, run in enumerate(runs):
            indices.append(len(plan.tasks))
            plan.tasks.append(Task(MAP, len(plan.tasks), _split_of(
                run, i == 0, i == len(runs) - 1, path, file_index)))
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
