"""A job's status as one JSON document, live from its master or from its files.

``p2pmr status``, ``GET /api/status`` and the dashboard all show this one
document (its schema is ``protocols/status.md``), so they never disagree:

* :class:`LiveStatus` reads a running :class:`~p2pmr.master.Master`: its
  scheduler's counts, its peer book, its recent events;
* :class:`StoredStatus` reads what a master leaves in its repo, under
  ``jobs/<job>/``: the journal (what completed, and the output), the event
  log (who did what, what failed) and, once the job is done, the report.

A stored job is *done* if its journal names an output, and *interrupted*
otherwise: either way nothing of it runs, and the document says how to
resume it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import JobError
from .master.journal import list_journals, read_records

if TYPE_CHECKING:
    from .master import Master

__all__ = ["LiveStatus", "StatusSource", "StoredStatus", "find_job_dir", "render_text"]

SCHEMA: Final = 1
FAILURES_SHOWN: Final = 10
RATE_WINDOW: Final = 30.0  # seconds of completions that throughput is measured over
PHASE_FIELDS: Final = ("complete", "total", "in_progress", "failed", "idle", "reused")


class StatusSource(Protocol):
    """What the status API and the dashboard serve: a document, and events."""

    async def status(self) -> dict[str, Any]: ...

    async def events(self, since: int = 0) -> list[dict[str, Any]]: ...


def _phase(**counts: int) -> dict[str, int]:
    return {name: int(counts.get(name, 0)) for name in PHASE_FIELDS}


def _throughput(events: Iterable[dict[str, Any]], now: float, phase: str,
                remaining: int) -> dict[str, float | None]:
    """Completions per second over the last :data:`RATE_WINDOW` seconds of the
    phase, the input bytes they covered, and the time left at that rate."""
    tasks, nbytes, first = 0, 0, now
    for event in events:
        if event.get("kind") == "completed" and event.get("phase") == phase \
                and event["time"] >= now - RATE_WINDOW:
            tasks += 1
            nbytes += int(event.get("bytes_in", 0))
            first = min(first, event["time"])
    span = max(now - first, 1.0)
    rate = tasks / span if tasks else 0.0
    return {"tasks_per_second": round(rate, 3),
            "bytes_per_second": round(nbytes / span, 1) if tasks else 0.0,
            "eta_seconds": round(remaining / rate, 1) if rate > 0 else None}


def _failures(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most recent failed attempts, newest first, with their tracebacks."""
    failed = [e for e in events if e.get("kind") == "failed"]
    return [{k: e.get(k) for k in ("time", "phase", "task", "attempt", "peer", "code",
                                   "reason", "traceback")}
            for e in reversed(failed[-FAILURES_SHOWN:])]


class LiveStatus:
    """The status of a job its master is running in this process."""

    def __init__(self, master: Master, repo: Path | None = None) -> None:
        self.master = master
        self.repo = repo
        self.started = time.time()

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        return [event.as_json() for event in self.master.events.since(since)]

    async def status(self) -> dict[str, Any]:
        return self.document()

    def document(self) -> dict[str, Any]:
        master = self.master
        now = time.time()
        phases = {"map": master.get_map_status(), "reduce": master.get_reduce_status()}
        # Only the events these need, newest first: a job keeps thousands, and
        # the document is made for every request and every pushed update.
        newest = reversed(master.events.recent)
        window = [e.as_json() for e in
                  itertools.takewhile(lambda e: e.time >= now - RATE_WINDOW, newest)]
        failed = [e.as_json() for e in itertools.islice(
            (e for e in reversed(master.events.recent) if e.kind == "failed"), FAILURES_SHOWN)]
        current = master.phase if master.phase in phases else "map"
        progress = phases[current]
        doc: dict[str, Any] = {
            "schema": SCHEMA, "live": True, "state": master.phase,
            "job": str(master.job_cid) if master.job_cid else None, "name": master.name,
            "input": str(master.input), "reducers": master.reducers,
            "master": str(master.node.peer_id), "repo": str(self.repo) if self.repo else None,
            "started": round(self.started, 3), "elapsed": round(now - self.started, 3),
            "output": str(master.output) if master.output else None,
            "map": _phase(**dataclasses.asdict(phases["map"])),
            "reduce": _phase(**dataclasses.asdict(phases["reduce"])),
            "throughput": {"phase": current, **_throughput(
                window, now, current, progress.total - progress.complete)},
            "peers": self._peers(), "failures": _failures(reversed(failed)),
            "locality": master.locality.report.as_json() if master.locality else {},
            "events": master.events.seq,
        }
        return doc

    def _peers(self) -> list[dict[str, Any]]:
        rows = []
        for record in self.master.scheduler.book.records.values():
            seen = self.master.watch.last_seen(record.peer)  # type: ignore[arg-type]
            rows.append({
                "id": str(record.peer), "completed": sum(record.completed.values()),
                "failed": record.failures, "running": record.in_flight,
                "window": record.window, "online": record.online,
                "excluded": record.excluded, "excluded_reason": record.excluded_reason or None,
                "last_contact": round(seen, 2) if seen is not None else None})
        return rows


def find_job_dir(repo: Path, job: str | None = None) -> Path:
    """A job's directory in a repo: the one named (by its job CID, or a
    unique prefix of it), else the newest."""
    found = list_journals(repo / "jobs")
    if not found:
        raise JobError(f"no job has run with the repo {repo}")
    if job is None:
        return found[0].path.parent
    names = [str(f.job) for f in found]
    matches = [n for n in names if n == job] or [n for n in names if n.startswith(job)]
    if len(matches) != 1:
        raise JobError(f"{'no' if not matches else 'more than one'} job in {repo} matches "
                       f"{job!r}; the repo has: {', '.join(sorted(names))}")
    return repo / "jobs" / matches[0]


class StoredStatus:
    """The status of a job no process is running, from its files in the repo."""

    def __init__(self, job_dir: Path, repo: Path) -> None:
        self.dir = job_dir
        self.repo = repo
        self._events = read_records(job_dir / "events.jsonl")
        for number, event in enumerate(self._events, 1):
            event["seq"] = number  # each run of the master counts from 1: renumber

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self._events[since:]

    async def status(self) -> dict[str, Any]:
        return self.document()

    def document(self) -> dict[str, Any]:
        journal = read_records(self.dir / "journal")
        if not journal or journal[0].get("t") != "job":
            raise JobError(f"{self.dir / 'journal'} is not a job journal")
        descriptor = journal[0].get("descriptor", {})
        report = json.loads((self.dir / "report.json").read_text()) \
            if (self.dir / "report.json").is_file() else {}
        output = next((r["cid"] for r in reversed(journal) if r.get("t") == "output"), None)
        done = Counter(r.get("phase") for r in journal if r.get("t") == "done")
        planned: dict[str, Any] = next((e.get("detail", {}) for e in reversed(self._events)
                        if e.get("kind") == "job-planned"), {})
        reducers = int(descriptor.get("reducers", planned.get("reducers", 0)))
        total_map = int(planned.get("map_tasks", done["map"]))
        reused = Counter(e.get("phase") for e in self._events if e.get("kind") == "reused")
        doc: dict[str, Any] = {
            "schema": SCHEMA, "live": False, "state": "done" if output else "interrupted",
            "job": self.dir.name, "name": descriptor.get("name"),
            "input": descriptor.get("input"), "reducers": reducers,
            "master": planned.get("master"), "repo": str(self.repo),
            "started": self._events[0]["time"] if self._events else None,
            "elapsed": report.get("wall_seconds"), "output": output,
            "map": self._phase(output, done["map"], total_map, reused["map"]),
            "reduce": self._phase(output, done["reduce"], reducers, reused["reduce"]),
            "throughput": {}, "peers": self._peers(report), "failures": _failures(self._events),
            "locality": report.get("locality", {}), "events": len(self._events),
        }
        if output:
            doc["tasks"] = report.get("tasks")
        else:
            doc["resume"] = (f"p2pmr run --repo {self.repo} --resume "
                             f"--input {descriptor.get('input')}")
        return doc

    @staticmethod
    def _phase(output: str | None, done: int, total: int, reused: int) -> dict[str, int]:
        # A finished job resumed from a journal that named its output
        # journals no more tasks: all of them are complete.
        complete = total if output else min(done, total) if total else done
        return _phase(complete=complete, total=max(total, complete),
                      idle=max(total, complete) - complete, reused=reused)

    def _peers(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for event in self._events:
            peer = event.get("peer")
            if peer is None:
                continue
            row = rows.setdefault(peer, {"id": peer, "completed": 0, "failed": 0, "running": 0,
                                         "window": None, "online": False, "excluded": False,
                                         "excluded_reason": None, "last_contact": None})
            kind = event.get("kind")
            if kind == "completed":
                row["completed"] += 1
            elif kind == "failed":
                row["failed"] += 1
            elif kind == "peer-excluded":
                row["excluded"], row["excluded_reason"] = True, event.get("reason")
        for peer, facts in report.get("peers", {}).items():
            row = rows.setdefault(peer, {"id": peer, "running": 0, "online": False,
                                         "last_contact": None})
            row.update(completed=facts.get("completed", 0), failed=facts.get("failed", 0),
                       window=facts.get("window"), excluded=facts.get("excluded", False),
                       excluded_reason=facts.get("excluded_reason") or None)
        return list(rows.values())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render_text(doc: dict[str, Any]) -> str:
    """The document for a terminal, most important first."""
    state = doc["state"] + ("" if doc["live"] else " (no master is running it)")
    lines = [f"job {doc['job'] or '(being planned)'}  {doc.get('name') or ''}",
             f"  state   {state}",
             f"  input   {doc['input']}   reducers {doc['reducers']}"]
    if doc.get("output"):
        lines.append(f"  output  {doc['output']}")
    for phase in ("map", "reduce"):
        p = doc[phase]
        reused = f", {p['reused']} reused" if p["reused"] else ""
        lines.append(f"  {phase:<7} {p['complete']}/{p['total']} complete, {p['in_progress']} "
                     f"running, {p['failed']} failed{reused}")
    rate = doc.get("throughput") or {}
    if doc["live"] and rate.get("tasks_per_second") is not None:
        mib = rate["bytes_per_second"] / 2**20
        lines.append(f"  speed   {rate['tasks_per_second']:.2f} {rate['phase']} tasks/s"
                     + (f", {mib:.1f} MiB/s of input" if mib else "")
                     + f"; {rate['phase']} phase done in {_duration(rate['eta_seconds'])}")
    if doc.get("elapsed") is not None:
        lines.append(f"  elapsed {_duration(doc['elapsed'])}")
    if doc["peers"]:
        lines.append("  peers")
        for peer in doc["peers"]:
            flags = "excluded: " + str(peer["excluded_reason"]) if peer["excluded"] else \
                ("online" if peer["online"] else "offline")
            contact = f", heard {peer['last_contact']:.1f}s ago" \
                if peer.get("last_contact") is not None else ""
            window = f", window {peer['window']}" if peer.get("window") else ""
            lines.append(f"    {peer['id']}  {peer['completed']} done, {peer['failed']} failed, "
                         f"{peer['running']} running{window}; {flags}{contact}")
    for failure in doc["failures"]:
        lines.append(f"  failed  {failure['phase']} task {failure['task']} on {failure['peer']}"
                     f" ({failure['code']}): {failure['reason']}")
        if failure.get("traceback"):
            lines.extend("          " + line for line in failure["traceback"].rstrip().splitlines())
    if doc.get("resume"):
        lines.append(f"  resume with: {doc['resume']}")
    return "\n".join(lines)
