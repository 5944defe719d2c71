"""Memoised tasks: what a task produced, found again by what it read.

Every task is a pure function of content: the job's code, the CIDs of what
it reads and the few settings that shape its output bytes. The memo records
each completed task's output under a key made of exactly those, so that any
later job that would run the same task (the same job again, or a job over a
grown input that shares most of its blocks) takes the output instead of
running it. Spec section 8 defines the key.

* a split's key holds the code CID, the number of reducers, the encoding,
  the CID version, the runtime, the sampled partition boundaries (the
  partitioner itself is part of the code), and the split: its file's path,
  its offset (a record's key is ``(path, offset)``), whether it starts or
  ends its file, and its blocks' CIDs and sizes;
* a boundary task's key holds the same job fields and the CID of the
  stitched lines it maps (which carry their paths and offsets);
* a reduce task's key holds the code CID, the encoding, the CID version,
  the runtime and its inputs' CIDs, in order (the order values reach reduce).

The table lives in the master's repo (``memo/``), one small JSON file per
entry, written whole by rename, so a crash leaves an entry whole or absent;
an unreadable entry is a miss. An entry counts only if what it names can
still be had: a reduce's part file here, a map task's partitions here or
on the peers that made them (otherwise the task just runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..errors import P2PMRError
from ..records import SplitInfo
from ..storage.base import BlockStore
from ..storage.cid import CID
from .journal import output_from_json, output_to_json
from .outputs import MapOutput, Output, ReduceOutput
from .plan import MAP, REDUCE, BoundaryWork, ReduceWork
from .scheduler import Scheduler, State, Task

__all__ = ["JobFacts", "Memo", "Reuse", "memo_key", "task_counts", "work_doc"]

log = logging.getLogger(__name__)

_VERSION = 1


@dataclass(frozen=True)
class JobFacts:
    """What, besides a task's own input, decides its output bytes."""

    code: CID
    reducers: int
    encoding: str
    cid_version: int
    runtime: str
    boundaries: CID | None = None  # a TotalOrder job's sampled ranges
    record_keys: bool = True       # False: the job sees no (path, offset), so neither is in a key


def work_doc(work: object) -> dict[str, Any] | None:
    """What a task reads, as its memo key and the provenance record name it;
    None while that cannot be known (a boundary task whose lines are not
    stitched yet)."""
    if isinstance(work, ReduceWork):
        return {"kind": "reduce", "inputs": [str(c) for c in work.inputs]}
    if isinstance(work, SplitInfo):
        return {"kind": "split", "path": work.path, "offset": work.offset,
                "first": work.first, "last": work.last,
                "blocks": [str(c) for c in work.blocks], "sizes": list(work.block_sizes)}
    if isinstance(work, BoundaryWork) and work.records is not None:
        return {"kind": "boundary", "records": str(work.records)}
    return None


_WORK_FIELDS = {"split": ("path", "offset", "first", "last", "blocks", "sizes"),
                "boundary": ("records",), "reduce": ("inputs",)}


def memo_key(facts: JobFacts, work: object) -> str | None:
    """The memo key of a task (hex SHA-256), or None while it cannot be known."""
    doc = work_doc(work)
    return None if doc is None else doc_key(facts, doc)


def doc_key(facts: JobFacts, work: dict[str, Any]) -> str:
    """The memo key of a task described by :func:`work_doc`'s fields (other
    fields, as a provenance record's task has, are left out)."""
    kind = work["kind"]
    fields = _WORK_FIELDS[kind]
    if kind == "split" and not facts.record_keys:
        fields = tuple(name for name in fields if name not in ("path", "offset"))
    doc = {"kind": kind, **{name: work[name] for name in fields}}
    doc.update({"v": _VERSION, "code": str(facts.code), "encoding": facts.encoding,
                "cid_version": facts.cid_version, "runtime": facts.runtime})
    if kind != "reduce":
        doc.update(reducers=facts.reducers,
                   boundaries=str(facts.boundaries) if facts.boundaries else None)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    output: Output
    agreed: int  # how many peers agreed on it (the job's --verify then)


class Memo:
    """The memo table of one repo: ``memo/<2 hex>/<key>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _read(self, key: str, reduce: bool) -> _Entry | None:
        path = self._path(key)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("v") != _VERSION or doc.get("key") != key or \
                    doc.get("phase") != ("reduce" if reduce else "map"):
                raise ValueError("not an entry for this key")
            output = output_from_json(reduce, doc["output"])
            return _Entry(output, int(doc.get("agreed", 1)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable memo entry %s: %s", path, exc)
            return None

    def _write(self, key: str, doc: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    async def lookup(self, keys: Sequence[tuple[str, bool]]) -> list[_Entry | None]:
        """The entries of ``(key, is_reduce)`` pairs, in one trip to a thread."""
        return await trio.to_thread.run_sync(
            lambda: [self._read(key, reduce) for key, reduce in keys])

    async def record(self, key: str, output: Output, *, job: CID, agreed: int) -> None:
        """Remember a task's output. Failing to is only a lost chance of reuse."""
        doc = {"v": _VERSION, "key": key,
               "phase": "reduce" if isinstance(output, ReduceOutput) else "map",
               "output": output_to_json(output), "agreed": agreed, "job": str(job),
               "created": time.time()}
        try:
            await trio.to_thread.run_sync(self._write, key, doc)
        except OSError as exc:
            log.warning("could not record task output in the memo %s: %s", self.root, exc)

    async def take_record(self, facts: JobFacts, record: dict[str, Any], *, job: CID,
                          skip: Container[tuple[Any, Any]] = (),
                          keep: Callable[[Output], Awaitable[None]] | None = None) -> int:
        """Enter the tasks of a provenance record (spec section 6.6), all but
        ``skip``'s ``(phase, index)``, under the keys ``facts`` give them;
        ``keep`` first makes each output available here. A task that cannot
        be taken is left out, with a warning: it will run. Returns how many."""
        taken = 0
        for entry in record["tasks"]:
            where = (entry.get("phase"), entry.get("index"))
            if where in skip:
                continue
            try:
                output = output_from_json(entry["phase"] == REDUCE, entry["output"])
                if keep is not None:
                    await keep(output)
                await self.record(doc_key(facts, entry), output, job=job, agreed=1)
                taken += 1
            except (KeyError, TypeError, ValueError, P2PMRError) as exc:
                log.warning("%s task %s of job %s not taken from its record: %s", *where, job,
                            exc)
        return taken


async def usable(blocks: BlockStore, output: Output) -> bool:
    """Can a job use this remembered output now?

    A part file must be here (the master keeps outputs). A map output must
    be here, or have holders: they are then trusted exactly as the holders
    of a journaled output are (spec section 7): a holder not seen within
    the grace period, or one that cannot serve it to a reducer that needs
    it, makes the map task run again.
    """
    if isinstance(output, ReduceOutput):
        return not await blocks.missing(output.cid)
    assert isinstance(output, MapOutput)
    output.local = True
    for cid in output.partitions:
        if cid is not None and await blocks.missing(cid):
            output.local = False
            break
    return output.local or bool(output.holders)


class Reuse:
    """A job's use of the memo: tasks taken from it before they would run,
    and tasks recorded in it as they complete.

    Each task is looked up once, as soon as its key can be known and before
    any peer is offered it: splits at once, a boundary task once its lines
    are stitched, a reduce once the map phase has named its inputs.
    ``fresh`` looks nothing up (everything runs) but still records.
    """

    def __init__(self, memo: Memo, facts: JobFacts, scheduler: Scheduler, blocks: BlockStore,
                 *, job: CID, agreed: int, fresh: bool,
                 completed: Callable[[Task], Awaitable[None]]) -> None:
        self.memo = memo
        self.facts = facts
        self.scheduler = scheduler
        self.blocks = blocks
        self.job = job
        self.agreed = agreed
        self.fresh = fresh
        self._completed = completed
        self._pending: dict[str, dict[int, None]] = {}  # per phase: not looked up yet

    async def sweep(self, phase: str) -> int:
        """Take from the memo every task of ``phase`` whose key is now known
        and whose output can still be had; return how many."""
        tasks = self.scheduler.phase_tasks(phase)
        pending = self._pending.get(phase)
        if pending is None:
            pending = self._pending[phase] = dict.fromkeys(range(len(tasks)))
        if self.fresh or not pending:
            return 0
        asked: list[tuple[Task, str]] = []
        for index in list(pending):
            task = tasks[index]
            if task.state is State.COMPLETED:
                del pending[index]
                continue
            if task.state is not State.IDLE or not task.ready:
                continue
            key = memo_key(self.facts, task.payload)
            if key is None:
                continue
            del pending[index]
            asked.append((task, key))
        if not asked:
            return 0
        entries = await self.memo.lookup([(key, phase == REDUCE) for _, key in asked])
        taken = 0
        for (task, _), entry in zip(asked, entries, strict=True):
            if entry is None or entry.agreed < self.agreed or task.state is not State.IDLE:
                continue
            if not await usable(self.blocks, entry.output):
                continue
            self.scheduler.restore(task, entry.output, reused=True)
            await self._completed(task)
            taken += 1
        if taken:
            log.info("reused %d %s task(s) from the memo", taken, phase)
        return taken

    async def record(self, task: Task) -> None:
        """Remember an output this job computed (not one it reused or resumed)."""
        output = task.output
        if task.reused or task.completed_by is None or \
                not isinstance(output, (MapOutput, ReduceOutput)):
            return
        key = memo_key(self.facts, task.payload)
        if key is not None:
            await self.memo.record(key, output, job=self.job, agreed=self.agreed)


def task_counts(scheduler: Scheduler, resumed: int) -> dict[str, int]:
    """Tasks run by peers in this job, taken from the memo and resumed from
    the journal; and the leaf blocks the map tasks that ran read, the
    measure of what an incremental job had to do again."""
    ran = [task for phase in (MAP, REDUCE) for task in scheduler.phase_tasks(phase)
           if task.completed_by is not None]
    return {"executed": len(ran),
            "reused": sum(scheduler.status(phase).reused for phase in (MAP, REDUCE)),
            "resumed": resumed,
            "blocks_mapped": sum([len(task.payload.blocks) for task in ran
                                  if isinstance(task.payload, SplitInfo)])}
