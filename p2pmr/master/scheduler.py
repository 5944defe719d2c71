"""Task state and assignment policy, without any I/O.

Each task follows one state machine::

    IDLE ──assign──▶ IN_PROGRESS ──result──▶ COMPLETED
      ▲                   │
      └──attempt failed───┘  (and no other attempt still running)
                          │
                          └──too many errors──▶ FAILED  (the job fails)

A task may have several attempts running at once (backups near the end of
a phase); the first result wins and the rest are cancelled. Results are
content-addressed, so a late duplicate would only ever repeat the winner.

What the scheduler knows of each peer is in its :class:`~.peerbook.PeerBook`.
One broken or hostile peer must never fail a job that honest peers could
finish. Three rules see to that:

* every failure of a peer counts, one per failure event (a peer that dies
  holding eight tasks has failed once, not eight times);
* a task that failed on a peer goes to another peer whenever one that has
  not failed it is usable, so a peer that fails fast cannot keep a task;
* a peer is excluded after ``exclude_after`` faults in a row, or when its
  share of failures is far above the rest of the swarm's (a binomial test
  against the swarm's rate), which catches a peer that fails often but not
  always. Failures that look like the task's own (its code raised, its
  worker died, its input could not be fetched) are charged to the peer only
  once another peer has run the same task successfully.
"""

from __future__ import annotations

import bisect
import enum
import heapq
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..wire.codes import ErrorCode
from .events import EventLog, task_bytes
from .peerbook import PeerBook, PeerRecord
from .policy import Policy

__all__ = ["Abort", "Attempt", "FailureKind", "PhaseStatus", "Placement", "Scheduler", "State",
           "Task", "TaskInfo", "backup_candidate"]


class State(enum.Enum):
    IDLE = "idle"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"


class FailureKind(enum.Enum):
    USER = "user"          # the job's code raised: deterministic, retried a few times
    INFRA = "infra"        # peer died, hung, timed out, sent garbage: the peer's fault
    WORKER = "worker"      # the worker process died: the code or the machine
    INPUT = "input"        # the peer could not fetch the task's input
    UNREACHABLE = "unreachable"  # the task never reached the peer: blame the peer only
    BUSY = "busy"          # the peer had no room; no fault, try elsewhere
    CANCELLED = "cancelled"  # we cancelled it (a backup won); no fault


class Abort(enum.Enum):
    """Why an attempt is stopped before its peer answered."""

    LOST = "lost"              # its peer died, went silent, or was excluded
    TIMEOUT = "timeout"        # it ran past the task deadline
    SUPERSEDED = "superseded"  # another attempt of the task finished first


@dataclass
class Attempt:
    number: int
    peer: Hashable
    started: float
    backup: bool = False
    running_since: float | None = None  # when the peer reported it executing
    aborted: bool = False
    _handler: Callable[[Abort, str], None] | None = None
    _requested: tuple[Abort, str] | None = None  # an abort that came before a handler

    def abort(self, kind: Abort, reason: str) -> None:
        """Stop this attempt, once: whoever runs it (see :meth:`arm`) is told.

        An abort that arrives before the attempt has a handler (its stream
        is still opening) is kept, and carried out by :meth:`arm`.
        """
        if self.aborted:
            return
        if self._handler is None:
            self._requested = self._requested or (kind, reason)
            return
        self.aborted = True
        self._handler(kind, reason)

    def arm(self, handler: Callable[[Abort, str], None]) -> None:
        """Whoever carries the attempt to its peer says how to stop it."""
        self._handler = handler
        if self._requested is not None:
            self.abort(*self._requested)

    @property
    def abort_pending(self) -> bool:
        return self._requested is not None

    def age(self, now: float, peer_progress: float = 0.0) -> float:
        """How long this attempt has been holding things up.

        Once the peer reports it running: its running time. Before that it
        is queued on the peer, which is fine while the peer keeps starting
        and finishing other tasks; its time counts only from the peer's last
        sign of progress (a peer that stalls with tasks queued still gets
        them backed up).
        """
        if self.running_since is not None:
            return now - self.running_since
        return now - max(self.started, peer_progress)


@dataclass
class Task:
    phase: str
    index: int
    payload: object = None
    state: State = State.IDLE
    ready: bool = True
    running: dict[int, Attempt] = field(default_factory=dict)
    attempts: int = 0
    user_errors: int = 0
    failures: int = 0
    input_failures: int = 0
    last_error: str = ""
    last_traceback: str = ""
    last_code: int | None = None  # the peer's error code for the last failure, if any
    output: object = None
    completed_by: Hashable = None
    duration: float | None = None
    # With verification: each distinct result (by signature) and who gave it.
    votes: dict[object, set[Hashable]] = field(default_factory=dict)
    vote_outputs: dict[object, object] = field(default_factory=dict)
    # Peers this task failed on (how often); the task avoids them while it can.
    failed_on: dict[Hashable, int] = field(default_factory=dict)
    # Failures not charged to their peer yet: charged if another peer succeeds.
    unproven: dict[Hashable, int] = field(default_factory=dict)
    reused: bool = False  # completed from the memo, without running

    def tried_by(self, peer: Hashable) -> bool:
        return any(peer in voters for voters in self.votes.values()) or \
            any(a.peer == peer for a in self.running.values())


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task's state machine, for the status API."""

    phase: str
    index: int
    state: str
    peers: tuple[str, ...]
    attempts: int
    started_at: float | None
    output: object


@dataclass(frozen=True)
class PhaseStatus:
    """Progress of one phase. Safe to poll from any task while a job runs."""

    complete: int = 0
    total: int = 0
    in_progress: int = 0
    failed: int = 0
    idle: int = 0
    reused: int = 0  # of ``complete``: taken from the memo, not run

    @property
    def done(self) -> bool:
        return self.total == self.complete

    def __str__(self) -> str:
        reused = f" ({self.reused} reused)" if self.reused else ""
        return (f"{self.complete}/{self.total} complete{reused}, {self.in_progress} in "
                f"progress, {self.failed} failed")


_MAX_PASSED = 512  # tasks a peer may pass over, looking for one it may take


class Placement(Protocol):
    """Which task a peer takes first (:class:`~p2pmr.master.locality.Locality`)."""

    def first_for(self, peer: Hashable, idle: Callable[[Task], bool]) -> Task | None:
        """A task ``peer`` should take before any other, if any."""
        ...

    def may_take(self, task: Task, peer: Hashable, usable: Callable[[Hashable], bool]) -> bool:
        """Whether ``peer`` may take ``task`` now (else it is left for others)."""
        ...


class Scheduler:
    """Task state, indexed so that every decision costs little; peers in :attr:`book`.

    A large input has tens of thousands of splits and the master consults
    the scheduler on every event, so nothing here scans all tasks: state
    counts, the idle tasks (a heap by index), the running attempts and the
    sorted task durations are kept up to date as tasks change state.
    """

    def __init__(self, policy: Policy | None = None, events: EventLog | None = None) -> None:
        self.policy = policy or Policy()
        self.events = events or EventLog()  # what happened, for people: never read back
        self.book = PeerBook(self.policy, self.events)
        self.tasks: dict[str, list[Task]] = {}
        self._counts: dict[str, dict[State, int]] = {}
        self._idle: dict[str, list[int]] = {}        # heaps of possibly idle, ready tasks
        self._retry: dict[str, dict[int, None]] = {}  # idle, ready tasks that failed before
        self._placement: dict[str, Placement] = {}
        self._failed: dict[str, list[Task]] = {}
        self._durations: dict[str, list[float]] = {}  # sorted
        self._reused: dict[str, int] = {}
        self.running_attempts: dict[str, dict[tuple[int, int], tuple[Task, Attempt]]] = {}

    # -- tasks -----------------------------------------------------------------------

    def add_tasks(self, phase: str, tasks: Iterable[Task]) -> None:
        phase_list = self.tasks.setdefault(phase, [])
        counts = self._counts.setdefault(phase, {state: 0 for state in State})
        heap = self._idle.setdefault(phase, [])
        self._retry.setdefault(phase, {})
        self._failed.setdefault(phase, [])
        self._durations.setdefault(phase, [])
        self.running_attempts.setdefault(phase, {})
        for task in tasks:
            phase_list.append(task)
            counts[task.state] += 1
            if task.state is State.IDLE and task.ready:
                heapq.heappush(heap, task.index)

    def phase_tasks(self, phase: str) -> list[Task]:
        return self.tasks.get(phase, [])

    def _set_state(self, task: Task, state: State) -> None:
        if task.state is state:
            return
        counts = self._counts[task.phase]
        counts[task.state] -= 1
        counts[state] += 1
        task.state = state
        if state is State.IDLE and task.ready:
            self._queue(task)
        elif state is State.FAILED:
            self._failed[task.phase].append(task)

    def _queue(self, task: Task) -> None:
        """Make an idle, ready task findable by :meth:`next_idle`.

        Tasks that failed before wait apart, in a short list that is checked
        against the asking peer; all others in a heap by index.
        """
        if task.failed_on:
            self._retry[task.phase][task.index] = None
        else:
            heapq.heappush(self._idle[task.phase], task.index)

    def mark_ready(self, task: Task) -> None:
        """A task whose inputs now exist (a boundary task) may be assigned."""
        if not task.ready:
            task.ready = True
            if task.state is State.IDLE:
                self._queue(task)

    def restore(self, task: Task, output: object, *, reused: bool = False) -> None:
        """Mark a task completed without running it: from a journal or the memo."""
        task.output = output
        task.reused = reused
        self._reused[task.phase] = self._reused.get(task.phase, 0) + reused
        self._set_state(task, State.COMPLETED)
        self.events.emit("reused" if reused else "resumed", phase=task.phase, task=task.index,
                         **task_bytes(task.payload, output))

    def reset(self, task: Task, reason: str = "its output was lost with the peers that held it"
              ) -> None:
        """Run a completed task again: its output was lost with its peers.

        Its output is a pure function of its inputs, so the rerun reproduces
        it, CIDs and all: nothing that consumed it needs to change, and
        ``output`` stays as the description of what the rerun will give (the
        manifest counts it even if every reduce finishes first).
        """
        if task.state is not State.COMPLETED:
            return
        self._reused[task.phase] = self._reused.get(task.phase, 0) - task.reused
        task.completed_by, task.reused = None, False
        task.votes.clear()
        task.vote_outputs.clear()
        self._set_state(task, State.IDLE)
        self.events.emit("rerun", phase=task.phase, task=task.index, reason=reason)

    def status(self, phase: str) -> PhaseStatus:
        counts = self._counts.get(phase)
        if counts is None:
            return PhaseStatus()
        return PhaseStatus(complete=counts[State.COMPLETED], total=len(self.phase_tasks(phase)),
                           in_progress=counts[State.IN_PROGRESS], failed=counts[State.FAILED],
                           idle=counts[State.IDLE],
                           reused=self._reused.get(phase, 0))

    def infos(self, phase: str) -> list[TaskInfo]:
        out = []
        for task in self.phase_tasks(phase):
            started = min((a.started for a in task.running.values()), default=None)
            out.append(TaskInfo(phase, task.index, task.state.value,
                                tuple(str(a.peer) for a in task.running.values()),
                                task.attempts, started, task.output))
        return out

    def phase_done(self, phase: str) -> bool:
        return self.status(phase).done

    def failed_task(self, phase: str) -> Task | None:
        failed = self._failed.get(phase)
        return failed[0] if failed else None

    def idle_count(self, phase: str) -> int:
        return self._counts[phase][State.IDLE] if phase in self._counts else 0

    def place(self, phase: str, placement: Placement) -> None:
        """Let ``placement`` say which of a phase's tasks each peer takes first."""
        self._placement[phase] = placement

    def takeable(self, task: Task) -> bool:
        """Idle, ready, and never failed: any peer may take it."""
        return task.state is State.IDLE and task.ready and not task.failed_on

    def _usable(self, peer: Hashable) -> bool:
        record = self.book.records.get(peer)
        return record is not None and record.online and not record.excluded

    def next_idle(self, phase: str, peer: Hashable = None) -> Task | None:
        """The next task that wants an attempt (on ``peer``, when given).

        Under verification a task wants attempts on distinct peers until
        enough of them agree, so a peer never gets a task it already ran.
        """
        if self.policy.verify > 1:
            return self._next_to_verify(phase, peer)
        tasks = self.phase_tasks(phase)
        retry = self._retry.get(phase, {})
        usable: list[PeerRecord] | None = None
        for index in list(retry):  # few: only tasks that failed before
            task = tasks[index]
            if task.state is not State.IDLE or not task.ready:
                del retry[index]  # stale: taken or finished since
                continue
            if usable is None:
                usable = self.book.usable()
            if peer is None or self.may_take(task, peer, usable):
                return task
        placement = self._placement.get(phase) if peer is not None else None
        if placement is not None:
            first = placement.first_for(peer, self.takeable)
            if first is not None:
                return first
        heap = self._idle.get(phase, [])
        passed: list[int] = []  # idle tasks left for other peers, put back after
        try:
            while heap and len(passed) < _MAX_PASSED:
                task = tasks[heap[0]]
                if not self.takeable(task):
                    heapq.heappop(heap)  # stale: taken, finished or failed since
                elif placement is None or placement.may_take(task, peer, self._usable):
                    return task
                else:
                    passed.append(heapq.heappop(heap))
            return None
        finally:
            for index in passed:
                heapq.heappush(heap, index)

    def may_take(self, task: Task, peer: Hashable, usable: list[PeerRecord] | None = None) -> bool:
        """A peer may take a task unless it failed it and another usable peer,
        one that could take it (not having failed it, nor already run it for a
        verification), has not."""
        if peer not in task.failed_on:
            return True
        return not any(r.peer not in task.failed_on and not task.tried_by(r.peer)
                       for r in (self.book.usable() if usable is None else usable))

    def _next_to_verify(self, phase: str, peer: Hashable) -> Task | None:
        for task in self.phase_tasks(phase):
            if peer is not None and (task.tried_by(peer) or not self.may_take(task, peer)):
                continue
            if task.state is State.IDLE and task.ready:
                return task
            if task.state is State.IN_PROGRESS and self._wants_more(task):
                return task
        return None

    def _wants_more(self, task: Task) -> bool:
        agreeing = max((len(v) for v in task.votes.values()), default=0)
        return agreeing + len(task.running) < self.policy.verify

    def start(self, task: Task, peer: Hashable, now: float, *, backup: bool = False) -> Attempt:
        attempt = Attempt(task.attempts, peer, now, backup)
        task.attempts += 1
        task.running[attempt.number] = attempt
        self.running_attempts[task.phase][(task.index, attempt.number)] = (task, attempt)
        self._set_state(task, State.IN_PROGRESS)
        record = self.book.records[peer]
        record.in_flight += 1
        self.events.emit("assigned", phase=task.phase, task=task.index, attempt=attempt.number,
                         peer=peer, backup=backup or None)
        return attempt

    def _finish_attempt(self, task: Task, attempt: Attempt) -> None:
        task.running.pop(attempt.number, None)
        self.running_attempts[task.phase].pop((task.index, attempt.number), None)
        self.book.records[attempt.peer].in_flight -= 1

    def any_running(self, phase: str) -> bool:
        return bool(self.running_attempts.get(phase))

    def succeed(self, task: Task, attempt: Attempt, output: object, now: float,
                signature: object = None) -> tuple[bool, set[Hashable]]:
        """Record a result; return (it completed the task, peers proven wrong).

        Without verification the first result completes the task. With
        ``verify = k``, results are compared by ``signature`` (their output
        CIDs) and the task completes once k distinct peers agree; peers whose
        results differ from that majority are returned, to be excluded.
        """
        self._finish_attempt(task, attempt)
        record = self.book.succeeded(attempt.peer, now)
        began = attempt.running_since if attempt.running_since is not None else attempt.started
        facts: dict[str, Any] = dict(
            phase=task.phase, task=task.index, attempt=attempt.number, peer=attempt.peer,
            seconds=round(now - began, 4), **task_bytes(task.payload, output))
        if task.state is State.COMPLETED:
            self.events.emit("answered", **facts)
            return False, set()
        if self.policy.verify > 1:
            task.votes.setdefault(signature, set()).add(attempt.peer)
            task.vote_outputs.setdefault(signature, output)
            if len(task.votes[signature]) < self.policy.verify:
                self.events.emit("answered", **facts)
                if not task.running:
                    self._set_state(task, State.IDLE)
                return False, set()
        task.output = output
        task.completed_by = attempt.peer
        # The task works, so its earlier failures were their peers' own.
        for other, count in task.unproven.items():
            if other != attempt.peer and other in self.book.records:
                self.book.failed(other, now, hard=False, count=count,
                                 reason=f"failed {task.phase} task {task.index}, which another "
                                        f"peer then ran without error")
        task.unproven.clear()
        # Run time, not time queued on the peer: backups compare against it.
        task.duration = now - began
        record.timed(task.duration, self.typical_duration(task.phase))
        bisect.insort(self._durations[task.phase], task.duration)
        self._set_state(task, State.COMPLETED)
        self.events.emit("completed", **facts)
        record.completed[task.phase] = record.completed.get(task.phase, 0) + 1
        liars: set[Hashable] = set()
        for other, voters in task.votes.items():
            if other != signature:
                liars |= voters
        return True, liars

    def fail(self, task: Task, attempt: Attempt, kind: FailureKind, message: str,
             traceback: str = "", *, blame_peer: bool = True, now: float = 0.0,
             code: int | None = None) -> None:
        """Record a failed attempt and move the task back to IDLE (or FAILED).

        With ``blame_peer``, an INFRA failure is charged to the peer here
        (and a BUSY one narrows its window); the master passes False and does
        that once per failure event instead.
        """
        self._finish_attempt(task, attempt)
        peer = attempt.peer
        began = attempt.running_since if attempt.running_since is not None else attempt.started
        self.events.emit("cancelled" if kind is FailureKind.CANCELLED else "failed",
                         phase=task.phase, task=task.index, attempt=attempt.number, peer=peer,
                         seconds=round(now - began, 4) if now else None,
                         code=_code_name(code, kind), reason=message, traceback=traceback or None)
        if kind is not FailureKind.CANCELLED:
            task.last_error = message
            task.last_code = code
            task.last_traceback = traceback or task.last_traceback
            task.failed_on[peer] = task.failed_on.get(peer, 0) + 1
        if kind in (FailureKind.USER, FailureKind.WORKER, FailureKind.INPUT):
            task.unproven[peer] = task.unproven.get(peer, 0) + 1
            # Not charged yet, but not rewarded with the next task at once
            # either: a peer that claims failures fast must not sweep the job.
            self.book.pause(peer, now)
        if kind is FailureKind.UNREACHABLE:
            pass
        elif kind is FailureKind.USER:
            task.user_errors += 1
        elif kind is FailureKind.INPUT:
            task.input_failures += 1
        elif kind is FailureKind.BUSY:
            if blame_peer:
                self.book.busy(peer, now)
        elif kind in (FailureKind.INFRA, FailureKind.WORKER):
            task.failures += 1
            if blame_peer and kind is FailureKind.INFRA:
                self.book.failed(peer, now, reason=message)
        if task.state is State.COMPLETED:
            return
        if task.user_errors >= self.policy.max_user_errors or \
                task.failures >= self.policy.max_task_failures or \
                task.input_failures >= self.policy.max_input_failures:
            self._set_state(task, State.FAILED)
            return
        if not task.running:
            self._set_state(task, State.IDLE)

    # -- stragglers --------------------------------------------------------------------------

    def running(self, attempt: Attempt, now: float, task: Task | None = None) -> None:
        """The peer reports the attempt executing: that is progress, too."""
        if attempt.running_since is None:
            attempt.running_since = now
            if task is not None:
                self.events.emit("running", phase=task.phase, task=task.index,
                                 attempt=attempt.number, peer=attempt.peer)
        self.book.records[attempt.peer].progress = now

    def age(self, attempt: Attempt, now: float) -> float:
        return attempt.age(now, self.book.records[attempt.peer].progress)

    def typical_duration(self, phase: str) -> float | None:
        """The median run time of the phase's completed tasks."""
        durations = self._durations.get(phase)
        if not durations:
            return None
        middle = len(durations) // 2
        if len(durations) % 2:
            return durations[middle]
        return (durations[middle - 1] + durations[middle]) / 2


def _code_name(code: int | None, kind: FailureKind) -> str:
    """The peer's error code by name, or what the master made of the failure."""
    if code is not None:
        return ErrorCode.named(code)
    return kind.value.upper()


def backup_candidate(sched: Scheduler, phase: str, peer: Hashable, now: float) -> Task | None:
    """An in-progress task worth duplicating on ``peer``, if the phase is nearly done.

    Only once no task of the phase is waiting to start, and only for a
    task running well past the typical duration, so a healthy run never
    executes anything twice. On a peer known to be slow (its tasks have
    taken ``slow_peer_factor`` times the typical, as LATE tells slow nodes
    apart) a task is backed up as soon as it is past the typical duration
    by ``backup_factor``, without the minimum age: waiting seconds for a
    peer ten times slower than the rest is what makes a straggler costly.
    """
    if not sched.policy.backups or sched.next_idle(phase) is not None:
        return None
    policy = sched.policy
    typical = sched.typical_duration(phase) or 0.0
    usual = max(policy.backup_min_age, policy.backup_factor * typical)
    quick = policy.backup_factor * typical if typical else usual
    overdue: dict[int, float] = {}  # how far past its threshold, for its least late attempt
    tasks: dict[int, Task] = {}
    for task, attempt in sched.running_attempts.get(phase, {}).values():
        slow = sched.book.records[attempt.peer].slowness >= policy.slow_peer_factor
        late = sched.age(attempt, now) - (quick if slow else usual)
        overdue[task.index] = min(late, overdue.get(task.index, late))
        tasks[task.index] = task
    best: Task | None = None
    best_late = -1.0
    for index in sorted(tasks):
        task = tasks[index]
        if len(task.running) >= policy.max_attempts_running:
            continue
        if any(a.peer == peer for a in task.running.values()):
            continue
        if overdue[index] >= 0 and overdue[index] > best_late:
            best, best_late = task, overdue[index]
    return best
