"""What happened to each task and peer, in order: the job's event log.

The scheduler and the peer book record an event at every transition they
make (a task assigned, running, completed, failed, reused; a peer joined,
lost, excluded). Nothing here decides anything: the log is for people and
their tools. ``p2pmr run --events FILE`` and the job's own
``jobs/<job>/events.jsonl`` get one JSON line per event (the format is
specified in ``protocols/status.md``); the status API and the dashboard read
the recent ones from memory.

Events carry wall-clock times (seconds since the epoch), not the event
loop's clock, so that lines from a master that was restarted, or from
another machine, can be put side by side.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Final

from ..records import SplitInfo
from .outputs import MapOutput, ReduceOutput

__all__ = ["Event", "EventLog", "task_bytes"]

log = logging.getLogger(__name__)

#: Task events, then peer and job events; the spec lists what each carries.
TASK_KINDS: Final = ("assigned", "running", "completed", "answered", "failed", "cancelled",
                     "reused", "resumed", "rerun")
PEER_KINDS: Final = ("peer-joined", "peer-lost", "peer-excluded")
JOB_KINDS: Final = ("job-planned", "phase", "job-done", "job-failed")

#: Events kept in memory, for the status API; files keep every one.
KEEP: Final = 20_000


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    time: float
    kind: str
    phase: str | None = None
    task: int | None = None
    attempt: int | None = None
    peer: str | None = None
    backup: bool | None = None
    seconds: float | None = None    # run time of the attempt, when it ended
    bytes_in: int | None = None     # input bytes of a map task over a split
    bytes_out: int | None = None    # a reduce task's part file
    records_in: int | None = None
    records_out: int | None = None
    code: str | None = None         # the peer's error code, for a failure
    reason: str | None = None
    traceback: str | None = None
    detail: dict[str, Any] | None = None  # job events: counts, output CID

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def task_bytes(payload: object, output: object) -> dict[str, int]:
    """The sizes worth showing for a finished task: a split's input bytes,
    a part file's size, and records in and out."""
    facts: dict[str, int] = {}
    if isinstance(payload, SplitInfo):
        facts["bytes_in"] = payload.size
    if isinstance(output, (MapOutput, ReduceOutput)):
        facts["records_in"] = output.records_in
        facts["records_out"] = output.records_out
    if isinstance(output, ReduceOutput):
        facts["bytes_out"] = output.size
    return facts


class EventLog:
    """The job's events: the recent ones in memory, every one in the files attached."""

    def __init__(self) -> None:
        self.recent: collections.deque[Event] = collections.deque(maxlen=KEEP)
        self.seq = 0
        self._sinks: list[IO[str]] = []

    def emit(self, kind: str, *, peer: Hashable = None, **fields: Any) -> Event:
        self.seq += 1
        event = Event(self.seq, time.time(), kind,
                      peer=str(peer) if peer is not None else None, **fields)
        self.recent.append(event)
        if self._sinks:
            line = json.dumps(event.as_json(), separators=(",", ":")) + "\n"
            for sink in list(self._sinks):
                try:
                    sink.write(line)
                    sink.flush()
                except OSError as exc:  # a full disk must not stop the job
                    log.warning("event log %s: %s; no more events written there",
                                getattr(sink, "name", "?"), exc)
                    self._sinks.remove(sink)
        return event

    def since(self, seq: int) -> list[Event]:
        """Events after ``seq`` that are still in memory, oldest first."""
        if not self.recent or seq >= self.seq:
            return []
        first = self.recent[0].seq
        start = max(0, seq + 1 - first)
        return list(self.recent)[start:]

    def attach(self, path: Path) -> None:
        """Append every event to ``path``: those already in memory, then each new one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        for event in self.recent:
            sink.write(json.dumps(event.as_json(), separators=(",", ":")) + "\n")
        sink.flush()
        self._sinks.append(sink)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks.clear()
