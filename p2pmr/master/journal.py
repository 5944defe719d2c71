"""The master's durable job journal.

One append-only JSON-lines file per job, ``<repo>/jobs/<job CID>/journal``.
The first record describes the job; each later record states that a task
completed and names its outputs by CID; the last names the output. Every
append is flushed and fsync'd before the master acts on it, so after a crash
(even SIGKILL or power loss) a resumed master knows every task it had
counted as complete. A torn last line, from a crash mid-write, is ignored.

Outputs named in the journal sit in the master's own store (the master
fetches them before counting a task complete), so "still retrievable" on
resume means "still present and intact locally".
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trio

from ..errors import JobFailed
from ..job import JobDescriptor
from ..records import BlockEdges
from ..storage.cid import CID
from .outputs import MapOutput, Output, ReduceOutput

__all__ = ["Journal", "find_journal", "list_journals", "output_from_json", "output_to_json",
           "read_records"]

log = logging.getLogger(__name__)

_NAME = "journal"


@dataclass
class Journal:
    path: Path
    job: CID
    descriptor: JobDescriptor
    records: list[dict[str, Any]] = field(default_factory=list)
    _handle: IO[str] | None = None
    _lock: trio.Lock = field(default_factory=trio.Lock)
    appends: int = 0
    sync_seconds: float = 0.0
    recreated: int = 0

    @classmethod
    def open(cls, root: Path, job: CID, descriptor: JobDescriptor, *,
             fresh: bool = False) -> Journal:
        """Open (or create) a job's journal; ``fresh`` sets an old one aside."""
        directory = root / str(job)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _NAME
        journal = cls(path, job, descriptor)
        if fresh and path.exists():
            path.rename(directory / f"{_NAME}.{int(time.time() * 1000)}")
        if path.exists():
            _trim_torn_tail(path)
            journal.records = read_records(path)
        journal._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115
        _fsync_dir(directory)  # a new journal's name must survive a crash too
        if not journal.records:
            journal._write({"t": "job", "job": str(job),
                            "descriptor": json.loads(descriptor.to_json()),
                            "created": time.time()})
        return journal

    @property
    def complete(self) -> bool:
        return any(r.get("t") == "output" for r in self.records)

    def _still_ours(self) -> bool:
        """The file at :attr:`path` is the one we write to (not deleted or replaced)."""
        assert self._handle is not None
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        ours = os.fstat(self._handle.fileno())
        return (on_disk.st_dev, on_disk.st_ino) == (ours.st_dev, ours.st_ino)

    def _recreate(self) -> None:
        """Write the journal afresh from the records in memory, and append to that.

        Without this, a journal deleted while the job runs would be written
        on into an unlinked file, and a later ``--resume`` would silently find
        nothing and recompute everything.
        """
        log.warning("the job journal %s was deleted or replaced while the job ran; "
                    "writing it again with the %d records so far", self.path,
                    len(self.records))
        assert self._handle is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{_NAME}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        # Only now, with the new journal in place, give up the old handle.
        self._handle.close()
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.recreated += 1

    def _write(self, record: dict[str, Any]) -> None:
        assert self._handle is not None
        start = time.perf_counter()
        if not self._still_ours():
            self._recreate()
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.sync_seconds += time.perf_counter() - start
        self.appends += 1
        self.records.append(record)

    async def append(self, record: dict[str, Any]) -> None:
        """Durably append; returns once the record is on disk."""
        with trio.CancelScope(shield=True):  # a half-written record helps nobody
            async with self._lock:  # one writer at a time: whole lines, in order
                try:
                    await trio.to_thread.run_sync(self._write, record)
                except OSError as exc:
                    raise JobFailed(
                        f"cannot write the job journal {self.path}: {exc}. Completed tasks "
                        f"up to here are journaled; make room (or fix the repo's disk) and "
                        f"run again with --resume") from exc

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _trim_torn_tail(path: Path) -> None:
    """Cut a last line left unfinished by a crash mid-write, so that the next
    record starts on a line of its own instead of being glued to it."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping a torn last record (%d bytes)", path, len(data) - keep)
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's records (a journal, an event log); torn lines are
    skipped, and a file that does not exist has none."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: ignoring torn record on line %d", path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


@dataclass(frozen=True)
class FoundJournal:
    job: CID
    descriptor: JobDescriptor
    path: Path
    complete: bool


def list_journals(root: Path) -> list[FoundJournal]:
    """Every job journal in a repo, newest first."""
    found = []
    if not root.is_dir():
        return []
    entries = sorted(root.iterdir(), key=lambda p: (p / _NAME).stat().st_mtime
                     if (p / _NAME).exists() else 0, reverse=True)
    for directory in entries:
        path = directory / _NAME
        if not path.exists():
            continue
        records = read_records(path)
        if not records or records[0].get("t") != "job":
            continue
        try:
            descriptor = JobDescriptor.from_json(json.dumps(records[0]["descriptor"]).encode())
            job = CID.parse(records[0]["job"])
        except Exception:
            continue
        found.append(FoundJournal(job, descriptor, path,
                                  any(r.get("t") == "output" for r in records)))
    return found


def find_journal(root: Path, *, input_cid: CID | None = None, reducers: int | None = None,
                 name: str | None = None, job: CID | None = None,
                 include_complete: bool = False) -> FoundJournal | None:
    """The newest journal of an unfinished job matching the given facts."""
    for found in list_journals(root):
        if found.complete and not include_complete:
            continue
        d = found.descriptor
        if job is not None and found.job != job:
            continue
        if input_cid is not None and d.input != input_cid:
            continue
        if reducers is not None and d.reducers != reducers:
            continue
        if name is not None and d.name != name:
            continue
        return found
    return None


def output_to_json(output: Output) -> dict[str, Any]:
    """An output as the journal records it: what it is, and where it is."""
    doc = output_doc(output)
    if isinstance(output, MapOutput):
        doc.update(holders=[str(p) for p in output.holders], local=output.local)
    return doc


def output_doc(output: Output) -> dict[str, Any]:
    """What an output is, and only that: a pure function of the task (the
    provenance record's form, spec section 6.6)."""
    if isinstance(output, ReduceOutput):
        return {"cid": str(output.cid), "records_in": output.records_in, "keys": output.keys,
                "records_out": output.records_out, "size": output.size}
    doc: dict[str, Any] = {
        "partitions": [str(c) if c else None for c in output.partitions],
        "partition_records": output.partition_records,
        "records_in": output.records_in, "records_out": output.records_out}
    if output.edges is not None:
        doc["edges"] = [output.edges.head, output.edges.tail, output.edges.no_newline]
        doc["head"] = output.head.hex() if output.head is not None else None
        doc["tail"] = output.tail.hex() if output.tail is not None else None
    return doc


def output_from_json(reduce: bool, doc: dict[str, Any]) -> Output:
    if reduce:
        return ReduceOutput(CID.parse(doc["cid"]), doc["records_in"], doc["keys"],
                            doc["records_out"], doc["size"])
    output = MapOutput([CID.parse(c) if c else None for c in doc["partitions"]],
                       doc["partition_records"], doc["records_in"], doc["records_out"])
    if "edges" in doc:
        head, tail, no_newline = doc["edges"]
        output.edges = BlockEdges(head, tail, bool(no_newline))
        output.head = bytes.fromhex(doc["head"]) if doc.get("head") is not None else None
        output.tail = bytes.fromhex(doc["tail"]) if doc.get("tail") is not None else None
    # Here, not at the top: finding and reading journals (`p2pmr run`, `status`)
    # must not import libp2p.
    from libp2p.peer.id import ID as PeerID

    for text in doc.get("holders", ()):
        try:
            output.holders.append(PeerID.from_base58(text))
        except Exception:  # a damaged entry names no one
            continue
    output.local = bool(doc.get("local", True))  # journals before r3: the master had all
    return output
