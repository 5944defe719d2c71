"""Resuming a job from its journal after the master stopped.

A resumed master finds the journal of the job, takes its settings and
code (they decide what its journaled outputs mean), and marks complete
every task whose outputs are still intact in its own store, and every map
task whose outputs were left on peers (spec section 7: if none of those
peers comes back, or none serves them, the task runs again then); only the
rest run again now. A job that had finished returns its output at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import CIDError
from ..job import JobDescriptor
from ..records import SplitInfo
from ..storage import unixfs
from ..storage.base import BlockStore
from ..storage.cid import CID
from .journal import FoundJournal, find_journal, output_from_json
from .outputs import MapOutput, Output
from .plan import MAP, REDUCE, BoundaryWork
from .scheduler import Scheduler, State

__all__ = ["finished_output", "find_resumable", "replay", "warn_if_code_changed"]

log = logging.getLogger(__name__)


def find_resumable(journals: Path, *, job: CID | None, input_cid: CID, reducers: int,
                   name: str) -> FoundJournal | None:
    """The journal a resumed run continues: the one named, or the newest match."""
    if job is not None:
        found = find_journal(journals, job=job, include_complete=True)
    else:
        found = find_journal(journals, input_cid=input_cid, reducers=reducers, name=name,
                             include_complete=True)
    if found is None:
        log.warning("nothing to resume for this job in %s: starting it afresh", journals)
    return found


def warn_if_code_changed(code: bytes | None, descriptor: JobDescriptor) -> None:
    """Say so when the code given is not the journaled run's.

    A resumed job runs the journaled code: its completed tasks are that
    code's results. Pickled code can differ without any change to the
    source (a job object holding a set, pickled in a process with another
    hash seed), so this warns rather than refuses.
    """
    if code is None:
        return  # resuming by journal alone: its code is the code
    ours, _ = unixfs.import_bytes(code, unixfs.ImportOptions(cid_version=descriptor.cid_version))
    if ours != descriptor.code:
        log.warning("the job's code (%s) is not the journaled run's (%s): resuming with the "
                    "journaled code; run without --resume to use the new code", ours,
                    descriptor.code)


async def finished_output(blocks: BlockStore, records: list[dict[str, Any]]) -> CID | None:
    """The output of an already finished run, if it is still intact here."""
    for record in reversed(records):
        if record.get("t") == "output":
            try:
                output = CID.parse(record["cid"])
            except (KeyError, CIDError):
                return None
            return output if not await blocks.missing(output) else None
    return None


async def _outputs_intact(blocks: BlockStore, output: Output) -> bool:
    cids = output.partitions if isinstance(output, MapOutput) else [output.cid]
    for cid in cids:
        if cid is not None and await blocks.missing(cid):
            return False
    return True


def _add_holders(kept: object, later: Output) -> None:
    if isinstance(kept, MapOutput) and isinstance(later, MapOutput):
        kept.holders = list(dict.fromkeys([*kept.holders, *later.holders]))


async def replay(records: list[dict[str, Any]], scheduler: Scheduler, blocks: BlockStore, *,
                 plan_reduce: Callable[[], None],
                 note_split: Callable[[Any], Awaitable[None]]) -> int:
    """Mark journaled tasks complete when their outputs are intact; return how many."""
    done = 0
    for phase in (MAP, REDUCE):
        if phase == REDUCE:
            if not scheduler.phase_done(MAP):
                break
            plan_reduce()
        tasks = scheduler.phase_tasks(phase)
        for record in records:
            if record.get("t") != "done" or record.get("phase") != phase:
                continue
            index = record.get("index", -1)
            if not 0 <= index < len(tasks):
                continue
            task = tasks[index]
            output = output_from_json(phase == REDUCE, record["output"])
            if task.state is State.COMPLETED:
                # Run again before the restart: its later holders hold it too.
                _add_holders(task.output, output)
                continue
            intact = await _outputs_intact(blocks, output)
            if isinstance(output, MapOutput):
                output.local = intact
                intact = intact or bool(output.holders)
            if not intact:
                log.info("journal: outputs of %s task %d are gone; it will run again",
                         phase, index)
                continue
            if isinstance(task.payload, BoundaryWork):
                task.payload.records = CID.parse(record["records"]) \
                    if record.get("records") else None
                scheduler.mark_ready(task)
            scheduler.restore(task, output)
            if isinstance(task.payload, SplitInfo):
                await note_split(task)
            done += 1
    if done:
        log.info("resumed %d completed task(s) from the journal", done)
    return done
