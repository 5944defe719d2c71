"""What a master knows of its peers: windows, pauses, failures, exclusion.

Peers earn work by experience. A new peer gets one task at a time; each
success doubles its window (the number of tasks it holds at once, within
``min_batch``..``max_batch``, handed over as one assignment); each failure
halves it; and a run of failures excludes the peer for the rest of the job.
A peer is also excluded when its failures are far above the rest of the
swarm's (a one-sided binomial test against the swarm's rate), which
catches a peer that fails often but not always.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from .events import EventLog
from .policy import Policy

__all__ = ["PeerBook", "PeerRecord", "PeerStatus"]


@dataclass
class PeerRecord:
    peer: Hashable
    window: int
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    in_flight: int = 0
    excluded: bool = False
    excluded_reason: str = ""
    untrusted: bool = False  # it refused this master as untrusted
    online: bool = True
    not_before: float = 0.0  # after a failure, no new work until then
    setbacks: int = 0        # BUSY answers or uncharged failures since its last success
    progress: float = 0.0    # when it last started or finished a task
    completed: dict[str, int] = field(default_factory=dict)
    # Its tasks' run times over the typical (median) one, averaged: 1 for a
    # peer like the rest, 10 for one ten times slower.
    slowness: float = 1.0
    raced: bool = False  # a backup of one of its tasks finished first
    _timings: int = 0
    _warm: bool = False

    def timed(self, duration: float, typical: float | None) -> None:
        """A task of this peer's completed in ``duration``; the phase's typical so far.

        Its first task is not counted: it pays for the worker's start and
        the job's code, which says nothing of the peer's speed."""
        if not self._warm:
            self._warm = True
        elif typical:
            self._timings += 1
            self.slowness += (duration / typical - self.slowness) / self._timings


@dataclass(frozen=True)
class PeerStatus:
    completed: int
    failed: int
    in_progress: int
    window: int
    excluded: bool
    online: bool
    excluded_reason: str = ""


class PeerBook:
    """Every peer a job has seen, and what it has earned."""

    def __init__(self, policy: Policy, events: EventLog | None = None) -> None:
        self.policy = policy
        self.events = events or EventLog()
        self.records: dict[Hashable, PeerRecord] = {}
        self._exclusions: list[PeerRecord] = []

    def __getitem__(self, peer: Hashable) -> PeerRecord:
        return self.records[peer]

    def succeeded(self, peer: Hashable, now: float) -> PeerRecord:
        """A success: the peer's streaks end and its window doubles (slow start)."""
        record = self.records[peer]
        record.progress = now
        record.successes += 1
        record.consecutive_failures = 0
        record.setbacks = 0
        record.window = min(self.policy.max_batch, record.window * 2)
        return record

    def pause(self, peer: Hashable, now: float) -> None:
        """No new work for a while after a setback: 0.5 s, doubling, at most 10 s."""
        record = self.records[peer]
        record.setbacks += 1
        record.not_before = max(record.not_before, now + min(10.0, 0.25 * 2 ** record.setbacks))

    def add(self, peer: Hashable) -> PeerRecord:
        record = self.records.get(peer)
        if record is None:
            record = self.records[peer] = PeerRecord(peer, window=self.policy.min_batch)
            self.events.emit("peer-joined", peer=peer)
        elif not record.online:
            self.events.emit("peer-joined", peer=peer, reason="reconnected")
        record.online = True
        return record

    def failed(self, peer: Hashable, now: float = 0.0, *, hard: bool = True, count: int = 1,
                    reason: str = "") -> None:
        """Charge ``count`` failures to a peer.

        A *hard* failure is one the peer caused for certain (a protocol
        violation, an error of its own, silence, a hang): it halves the
        window, backs the peer off, and counts towards ``exclude_after`` in a
        row. A soft one (charged after the fact, when another peer ran the
        task fine) only counts towards the failure-rate test.
        """
        record = self.records[peer]
        record.failures += count
        if hard:
            record.consecutive_failures += count
            record.window = max(self.policy.min_batch, record.window // 2)
            # Back off before trusting it with work again: 0.5 s, 1 s, 2 s… up to 10 s.
            record.not_before = now + min(10.0, 0.25 * 2 ** record.consecutive_failures)
            if record.consecutive_failures >= self.policy.exclude_after:
                self.exclude(peer, f"{record.consecutive_failures} failures in a row"
                             + (f"; the last: {reason}" if reason else ""))
                return
        self._check_rate(record, reason)

    def offline(self, peer: Hashable) -> None:
        """The peer disconnected; it is back once it reconnects (:meth:`add`)."""
        self.records[peer].online = False

    def busy(self, peer: Hashable, now: float) -> None:
        """The peer had no room: no fault, but fewer tasks and a pause."""
        record = self.records[peer]
        record.window = max(self.policy.min_batch, record.window // 2)
        self.pause(peer, now)

    def slow(self, peer: Hashable) -> None:
        """The peer lost a backup race: it gets fewer tasks, but no fault.

        Its task ran past the backup threshold while another peer ran it
        from scratch and finished first: that is a slow peer, whatever its
        finished tasks (if any) say, so its next tasks are backed up sooner.
        """
        record = self.records[peer]
        record.window = max(self.policy.min_batch, record.window // 2)
        record.slowness = max(record.slowness, self.policy.slow_peer_factor)
        record.raced = True

    def exclude(self, peer: Hashable, reason: str, *, untrusted: bool = False) -> None:
        record = self.records[peer]
        if not record.excluded:
            record.excluded = True
            record.excluded_reason = reason
            record.untrusted = untrusted
            self._exclusions.append(record)
            self.events.emit("peer-excluded", peer=peer, reason=reason)

    def take_exclusions(self) -> list[PeerRecord]:
        """Peers excluded since the last call, for the caller to act on.

        Exclusion can follow from any recorded event (a success elsewhere
        proves earlier failures were a peer's own), so rather than call back
        into its owner, the book lists them here.
        """
        out, self._exclusions = self._exclusions, []
        return out

    def _check_rate(self, record: PeerRecord, reason: str) -> None:
        """Exclude a peer that fails far more often than the rest of the swarm."""
        policy = self.policy
        attempts = record.failures + record.successes
        if record.excluded or record.failures < policy.exclude_min_failures or \
                record.failures < policy.exclude_min_rate * attempts:
            return
        others = [r for r in self.records.values() if r is not record]
        other_failures = sum(r.failures for r in others)
        other_attempts = sum(r.failures + r.successes for r in others)
        if not other_attempts or not any(r.online and not r.excluded for r in others):
            return  # nothing to compare with, or no one left to do the work
        # The swarm's rate, with a prior of one failure in two attempts so
        # that a few lucky attempts elsewhere do not make the bar zero.
        swarm_rate = (other_failures + 1) / (other_attempts + 2)
        if record.failures < policy.exclude_rate_factor * swarm_rate * attempts:
            return
        p_value = _binomial_tail(record.failures, attempts, swarm_rate)
        if p_value < policy.exclude_significance:
            self.exclude(record.peer, f"failed {record.failures} of {attempts} attempts, "
                         f"against {other_failures} of {other_attempts} for the other peers"
                         + (f"; the last: {reason}" if reason else ""))

    def available(self, now: float = 0.0) -> Iterator[PeerRecord]:
        """Peers that can take another task now, least loaded first."""
        ready = [r for r in self.records.values()
                 if r.online and not r.excluded and r.in_flight < r.window
                 and r.not_before <= now]
        ready.sort(key=lambda r: (r.in_flight / r.window, -r.successes))
        return iter(ready)

    def usable(self) -> list[PeerRecord]:
        return [r for r in self.records.values() if r.online and not r.excluded]

    def status(self) -> dict[str, PeerStatus]:
        return {str(r.peer): PeerStatus(sum(r.completed.values()), r.failures, r.in_flight,
                                        r.window, r.excluded, r.online, r.excluded_reason)
                for r in self.records.values()}


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        log_term = (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * log_p + (n - i) * log_q)
        total += math.exp(log_term)
    return min(1.0, total)
