"""Checking a job's output from its CID alone: ``p2pmr verify``.

The output directory links a provenance record (spec section 6.6) that
names every task's inputs and outputs; being inside the CID-named
directory, none of it can change without changing the CID. To check an
output is then to run its tasks again and compare. Rather than a second
implementation of tasks, verification drives a real :class:`Master` over
a scratch repo with the job the record names: the tasks chosen for the
check run on peers as any job's do, and every other task is taken from the
record through the scratch repo's memo, exactly as a memoised task would
be. A task whose recorded output cannot be had runs too, and is checked.

What this proves: every task that ran again gave the output the record
claims (or is named as the one that did not), the parts are the record's,
and, when every task ran, the output is the one this code makes from this
input. Sampling proves each unchecked task only as far as a liar cannot
know which tasks will be drawn: the sample is drawn at random unless a
seed is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .attestation import check_attestation
from .errors import P2PMRError, UnixFSError, UnverifiableOutput
from .job import JobDescriptor, in_fresh_process, runtime
from .master.journal import output_doc
from .master.memo import JobFacts, Memo, work_doc
from .master.outputs import MapOutput, ReduceOutput
from .master.plan import MAP, REDUCE
from .partition import TotalOrder
from .runner import RunSettings, open_master_node
from .storage import unixfs
from .storage.base import BlockStore
from .storage.cid import CID

if TYPE_CHECKING:
    from .master import Master

__all__ = ["Mismatch", "Sample", "Verdict", "verify_output"]

log = logging.getLogger(__name__)

RECORD = "_provenance.json"


@dataclass(frozen=True)
class Sample:
    """Which tasks to run again: all of them, ``count`` of them, or a
    ``share`` of them (at least one), drawn with ``seed`` if given."""

    count: int | None = None
    share: float | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, text: str | None, seed: int | None = None) -> Sample:
        """``None`` (all), ``"N"`` tasks or ``"P%"`` of them."""
        if text is None:
            return cls(seed=seed)
        try:
            if text.endswith("%"):
                share = float(text[:-1]) / 100
                if not 0 < share <= 1:
                    raise ValueError(text)
                return cls(share=share, seed=seed)
            count = int(text)
            if count < 1:
                raise ValueError(text)
            return cls(count=count, seed=seed)
        except ValueError:
            raise P2PMRError(f"--sample takes a number of tasks or a percentage "
                             f"(10, 5%), not {text!r}") from None

    def choose(self, tasks: list[tuple[str, int]]) -> set[tuple[str, int]]:
        if self.count is None and self.share is None:
            return set(tasks)
        wanted = self.count if self.count is not None else \
            math.ceil(len(tasks) * (self.share or 0.0))
        draw = random.Random(self.seed) if self.seed is not None else random.SystemRandom()
        return set(draw.sample(tasks, min(len(tasks), max(1, wanted))))


@dataclass(frozen=True)
class Mismatch:
    """One thing that did not match. ``cause`` is ``"output"`` when a task
    read what the record says and gave another output (whoever produced it
    erred or lied), ``"inputs"`` when it read other inputs than the record
    says (it follows from a mismatch before it), and ``"output directory"``
    for the directory itself."""

    phase: str
    index: int
    cause: str
    task: str
    recorded: str
    found: str
    peer: str | None = None  # who produced it, if the master's journal is at hand

    def __str__(self) -> str:
        by = f", produced by peer {self.peer}" if self.peer else ""
        return (f"{self.phase} task {self.index} ({self.task}{by}): {self.cause} differ: "
                f"the record says {self.recorded}, running it again gives {self.found}")


@dataclass
class Verdict:
    output: CID
    tasks: int = 0     # in the record
    checked: int = 0   # run again and compared
    mismatches: list[Mismatch] = field(default_factory=list)
    recomputed: CID | None = None
    attested_by: str | None = None  # the master whose signed attestation was checked

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "ok": self.ok, "tasks": self.tasks,
                "checked": self.checked,
                "recomputed": str(self.recomputed) if self.recomputed else None,
                "attested_by": self.attested_by,
                "mismatches": [dataclasses.asdict(m) for m in self.mismatches]}


def _describe(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == "split":
        return (f"split of {entry.get('path') or 'the input'} at byte {entry.get('offset')}, "
                f"{len(entry.get('blocks', ()))} block(s) from {entry['blocks'][0]}"
                if entry.get("blocks") else "split")
    if kind == "boundary":
        return f"lines across block edges, {entry.get('records')}"
    if kind == "reduce":
        return f"reduce of {len(entry.get('inputs', ()))} partition(s)"
    return str(kind)


def _cids(output: dict[str, Any] | None) -> str:
    if not output:
        return "no output"
    if "cid" in output:
        return str(output["cid"])
    return "partitions [" + ", ".join(str(c) for c in output.get("partitions", ())) + "]"


async def read_record(blocks: BlockStore, output: CID) -> tuple[dict[str, Any], dict[str, CID]]:
    """The output's provenance record and its directory entries."""
    try:
        entries = {e.name: e.cid for e in await unixfs.list_directory(blocks, output)}
    except UnixFSError as exc:
        raise UnverifiableOutput(f"{output} is not a p2pmr output (with a {RECORD}): "
                                 f"{exc}") from None
    if RECORD not in entries:
        raise UnverifiableOutput(
            f"{output} has no {RECORD}: it is not a p2pmr output, or one made before "
            "outputs carried their provenance")
    try:
        record: dict[str, Any] = json.loads(await unixfs.read_range(blocks, entries[RECORD]))
        if record.get("p2pmr_provenance") != 1 or not isinstance(record.get("tasks"), list):
            raise ValueError("not a provenance record of version 1")
    except ValueError as exc:
        raise UnverifiableOutput(f"{output}/{RECORD} cannot be read: {exc}") from None
    return record, entries


def check_parts(record: dict[str, Any], entries: dict[str, CID]) -> list[Mismatch]:
    """The directory's part files are the reduce outputs the record names."""
    found = []
    reduces = [t for t in record["tasks"] if t.get("phase") == REDUCE]
    for task in reduces:
        name = f"part-{task['index']:05d}"
        recorded = _cids(task.get("output"))
        actual = str(entries[name]) if name in entries else "no such file"
        if actual != recorded:
            found.append(Mismatch(REDUCE, task["index"], "output directory", name, recorded,
                                  f"the directory's {name} is {actual}"))
    extra = sorted(n for n in entries if n.startswith("part-")
                   and n not in {f"part-{t['index']:05d}" for t in reduces})
    if extra:
        found.append(Mismatch(REDUCE, -1, "output directory", ", ".join(extra),
                              f"{len(reduces)} part file(s)", "more in the directory"))
    return found


def producers(repos: tuple[Path, ...], job: CID) -> dict[tuple[str, int], str]:
    """Who produced each task, from the journal of the master that ran the
    job, when it is in one of these repos (a third party has none)."""
    found: dict[tuple[str, int], str] = {}
    for repo in repos:
        try:
            lines = (repo / "jobs" / str(job) / "journal").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                if entry.get("t") == "done" and entry.get("by"):
                    found[(str(entry["phase"]), int(entry["index"]))] = str(entry["by"])
    return found


def compare(master: Master, record: dict[str, Any], by: dict[tuple[str, int], str]
            ) -> tuple[int, list[Mismatch]]:
    """Every task the master ran, against the record: (how many, mismatches)."""
    recorded = {(t.get("phase"), t.get("index")): t for t in record["tasks"]}
    checked, found = 0, []
    for phase in (MAP, REDUCE):
        for task in master.scheduler.phase_tasks(phase):
            if task.completed_by is None:
                continue  # taken from the record
            checked += 1
            entry = recorded.get((phase, task.index), {})
            work = work_doc(task.payload) or {}
            ran = output_doc(task.output) \
                if isinstance(task.output, (MapOutput, ReduceOutput)) else None
            if any(entry.get(name) != value for name, value in work.items()):
                found.append(Mismatch(phase, task.index, "inputs", _describe(work),
                                      _describe(entry) if entry else "no such task",
                                      _describe(work), by.get((phase, task.index))))
            elif entry.get("output") != ran:
                found.append(Mismatch(phase, task.index, "output", _describe(work),
                                      _cids(entry.get("output")), _cids(ran),
                                      by.get((phase, task.index))))
    return checked, found


def _total_order(code: bytes) -> TotalOrder | None:
    """The job's TotalOrder; in a fresh process, since it unpickles job code."""
    import cloudpickle

    from .job import Job

    obj = cloudpickle.loads(code)
    job = obj if isinstance(obj, Job) else Job.from_object(obj)
    return job.partition if isinstance(job.partition, TotalOrder) else None


async def _attested_producers(blocks: BlockStore, attestation: CID, output: CID
                              ) -> tuple[str, dict[tuple[str, int], str]]:
    """The signer of an attestation about ``output``, and who it says
    produced each task; an attestation that does not check out is an error."""
    checked = check_attestation(await unixfs.read_range(blocks, attestation))
    if checked.output != output:
        raise UnverifiableOutput(f"attestation {attestation} is about {checked.output}, "
                                 f"not {output}")
    by = {}
    for task, peer in checked.producers.items():
        phase, _, index = task.partition("/")
        with contextlib.suppress(ValueError):
            by[(phase, int(index))] = peer
    return checked.master, by


async def verify_output(settings: RunSettings, output: CID, sample: Sample, *,
                        read_repos: tuple[Path, ...] = (), attestation: CID | None = None,
                        imported: Callable[[], object] = lambda: None) -> Verdict:
    """Run the chosen tasks of ``output``'s job again, on the settings' peers
    and with ``settings.repo`` as a scratch repo, and compare. Producers are
    named from ``attestation`` if given, else from a journal at hand."""
    verdict = Verdict(output)
    # Local peers read those repos in place too: the job's blocks are there.
    settings = dataclasses.replace(settings, local_peer_args=(
        *settings.local_peer_args, *(a for r in read_repos for a in ("--read-store", str(r)))))
    async with contextlib.AsyncExitStack() as stack:
        node = await open_master_node(settings, stack, imported)
        from .master import Master
        from .storage.embedded import EmbeddedStore

        if read_repos and isinstance(node.blocks, EmbeddedStore):
            node.blocks.read_from(list(read_repos))
        record, entries = await read_record(node.blocks, output)
        verdict.tasks = len(record["tasks"])
        verdict.mismatches += check_parts(record, entries)
        if record.get("runtime") != runtime():
            raise UnverifiableOutput(
                f"{output} was computed by {record.get('runtime')!r}, and this is "
                f"{runtime()!r}: run verify where the job's runtime is")
        job = CID.parse(record["job"])
        by = producers(read_repos, job)
        if attestation is not None:
            verdict.attested_by, by = await _attested_producers(node.blocks, attestation,
                                                                output)
        descriptor = JobDescriptor.from_json(await unixfs.read_range(node.blocks, job))
        code = await unixfs.read_range(node.blocks, descriptor.code)
        order = await in_fresh_process(_total_order, code) if descriptor.boundaries else None
        facts = JobFacts(descriptor.code, descriptor.reducers, descriptor.encoding,
                         descriptor.cid_version, runtime(), descriptor.boundaries,
                         descriptor.record_keys)
        everything = [(t.get("phase"), t.get("index")) for t in record["tasks"]]
        chosen = sample.choose(everything)
        # Every task not chosen is taken from the record, as from a memo.
        await Memo(settings.repo / "memo").take_record(facts, record, job=job, skip=chosen)
        options = dataclasses.replace(
            settings.master, encoding=descriptor.encoding, cid_version=descriptor.cid_version,
            split_size=descriptor.split_size, boundary_group=descriptor.boundary_group,
            journal=False, fresh=False, memo=len(chosen) < len(everything))
        master = Master(node, descriptor.input, None, descriptor.reducers, options, code=code,
                        name=descriptor.name, total_order=order,
                        record_keys=descriptor.record_keys)
        verdict.recomputed = await master.run()
        if master.job_cid != job:
            verdict.mismatches.append(Mismatch(
                "job", 0, "job descriptor", "the job", str(job), str(master.job_cid)))
        verdict.checked, found = compare(master, record, by)
        verdict.mismatches += found
        if verdict.recomputed != output and not verdict.mismatches:
            verdict.mismatches.append(Mismatch(
                "output", 0, "output directory", "the manifest or the record",
                str(output), str(verdict.recomputed)))
    return verdict
