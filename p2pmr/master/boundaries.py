"""Lines across block edges: when a boundary task can run, and what it maps.

A split's map task returns the partial lines at its run's two edges
(:mod:`p2pmr.records`). Once every split a group of boundaries depends on is
mapped, the fragments are joined into whole lines, stored as a records file,
and the group's boundary task becomes ready.
"""

from __future__ import annotations

from libp2p.peer.id import ID as PeerID

from ..errors import BlockNotFound, JobFailed, UnixFSError
from ..records import SplitInfo, encode_records, stitch_file
from ..storage import unixfs
from ..storage.base import BlockStore, Fetcher
from ..storage.cid import CID
from .outputs import MapOutput
from .plan import BoundaryWork, InputPlan
from .scheduler import Scheduler, State, Task

__all__ = ["Boundaries"]


async def _read_run(source: Fetcher, split: SplitInfo, start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` of a split's run, reading only the blocks they lie in."""
    pieces: list[bytes] = []
    offset = 0
    for cid, size in zip(split.blocks, split.block_sizes, strict=True):
        if offset < stop and start < offset + size:
            try:
                data = unixfs.extract_data(cid, await source.get(cid))
            except (BlockNotFound, UnixFSError) as exc:
                raise JobFailed(f"cannot read the input block {cid}: {exc}") from None
            if len(data) != size:
                raise JobFailed(f"the input block {cid} holds {len(data)} bytes, not {size}")
            pieces.append(data[max(0, start - offset):stop - offset])
        offset += size
    return b"".join(pieces)


class Boundaries:
    """Per file: how many splits are done from its start, and the next group.

    The prefix only grows, so a completion costs work in proportion to what
    it unlocks, however many splits a file has.
    """

    def __init__(self, plan: InputPlan, scheduler: Scheduler, blocks: BlockStore, *,
                 cid_version: int, fetch_timeout: float) -> None:
        self.plan = plan
        self.scheduler = scheduler
        self.blocks = blocks
        self.cid_version = cid_version
        self.fetch_timeout = fetch_timeout
        self._prefix = [0] * len(plan.files)
        self._next_group = [0] * len(plan.files)

    def _split(self, index: int) -> SplitInfo:
        work = self.plan.tasks[index].payload
        assert isinstance(work, SplitInfo)
        return work

    async def split_done(self, task: Task) -> None:
        """A split's map task completed: note its edges, ready what it unlocks."""
        await self.note(task)
        split = task.payload
        assert isinstance(split, SplitInfo)
        await self.update(split.file)

    async def note(self, task: Task) -> None:
        """Record a split's edge fragments for stitching.

        ``edges`` is what marks the split as known to :meth:`update`, so it is
        set only after the fragments are in hand: a long fragment is read from
        the block, and while that read waits another completion may stitch
        the boundaries around this split.
        """
        split, output = task.payload, task.output
        assert isinstance(split, SplitInfo) and isinstance(output, MapOutput)
        assert output.edges is not None and split.block is not None
        head, tail = output.head, output.tail
        if (output.edges.head and head is None) or (output.edges.tail and tail is None):
            # Long fragments are not sent inline: read them from the run's blocks.
            peer = task.completed_by
            source = Fetcher(self.blocks, self.fetch_timeout,
                             [peer] if isinstance(peer, PeerID) else [])
            if head is None:
                head = await _read_run(source, split, 0, output.edges.head)
            if tail is None:
                tail = await _read_run(source, split, split.size - output.edges.tail, split.size)
        split.head, split.tail = head, tail
        split.edges = output.edges

    async def update(self, file_index: int) -> None:
        """Make boundary tasks ready once every split they depend on is done."""
        splits = self.plan.splits[file_index]
        tasks = self.plan.tasks
        done = self._prefix[file_index]
        while done < len(splits) and tasks[splits[done]].state is State.COMPLETED \
                and self._split(splits[done]).edges is not None:
            done += 1
        self._prefix[file_index] = done
        bounds = self.plan.boundaries[file_index]
        while self._next_group[file_index] < len(bounds):
            task = tasks[bounds[self._next_group[file_index]]]
            work = task.payload
            assert isinstance(work, BoundaryWork)
            if done <= work.last_split:
                return
            self._next_group[file_index] += 1
            if task.ready or work.building:
                continue
            work.building = True
            if work.records is None:
                work.records = await self._records(file_index, work)
            self.scheduler.mark_ready(task)

    async def update_all(self) -> None:
        for file_index in range(len(self.plan.files)):
            await self.update(file_index)

    async def _records(self, file_index: int, work: BoundaryWork) -> CID:
        """Stitch and store the lines that end in this group's boundaries.

        Stitching starts at the last split before the group that has a
        newline: a line can only reach back that far.
        """
        splits = self.plan.splits[file_index]
        start = work.first_split
        while start > 0:
            edges = self._split(splits[start]).edges
            if edges is None or not edges.no_newline:
                break
            start -= 1
        infos = [self._split(i) for i in splits[start:work.last_split + 1]]
        lines = [line for line in stitch_file(infos, partial=True)
                 if work.first_split < line[3] + start <= work.last_split]
        path = self.plan.files[file_index][0]
        data = encode_records((path, off, raw, term) for off, raw, term, _ in lines)
        options = unixfs.ImportOptions(cid_version=self.cid_version)
        return await unixfs.add_bytes(self.blocks, data, options)
