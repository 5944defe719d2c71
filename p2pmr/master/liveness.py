"""Who is working for the job: peers joining, leaving, falling silent, and
what each failure costs the peer that caused it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio
from libp2p.peer.id import ID as PeerID

from ..network import Network
from ..wire.framing import PROTOCOL_ID
from .scheduler import Abort, Attempt, Scheduler

__all__ = ["PeerWatch"]

log = logging.getLogger(__name__)


class PeerWatch:
    """Tracks the job's workers and charges them for their failures.

    A peer is *seen* whenever it shows a sign of life (joining, any frame),
    which is what silence is measured from; it is *heard* when it sends a
    frame or is given a new assignment, which is what tells one failure
    event from the next (see :meth:`charge`).
    """

    def __init__(self, network: Network, scheduler: Scheduler, *, peer_timeout: float,
                 changed: Callable[[], None]) -> None:
        self.network = network
        self.scheduler = scheduler
        self.peer_timeout = peer_timeout
        self._changed = changed
        self._seen: dict[PeerID, float] = {}
        self._heard: dict[PeerID, float] = {}
        self._charged: dict[PeerID, float] = {}

    def heard(self, peer: PeerID) -> None:
        self._seen[peer] = self._heard[peer] = trio.current_time()

    def last_seen(self, peer: PeerID) -> float | None:
        """Seconds since the peer last showed a sign of life, if it ever did."""
        seen = self._seen.get(peer)
        return None if seen is None else max(0.0, trio.current_time() - seen)

    async def watch(self, introduce: Callable[[PeerID], None]) -> None:
        """Run for the job: who joined, who left, who went silent."""
        while True:
            now = trio.current_time()
            workers = set(self.network.peers_speaking(PROTOCOL_ID))
            for peer in workers:
                record = self.scheduler.book.records.get(peer)
                if record is None or not record.online:
                    self.scheduler.book.add(peer)
                    self._seen[peer] = now
                    log.info("peer %s joined", peer)
                    introduce(peer)
                    self._changed()
            for record in list(self.scheduler.book.records.values()):
                known = record.peer
                assert isinstance(known, PeerID)
                if not record.online:
                    continue
                if not self.network.is_connected(known):
                    self.scheduler.book.offline(known)
                    self.lost(known, "peer disconnected")
                elif record.in_flight and self.awaiting_answers(known) and \
                        now - self._seen.get(known, now) > self.peer_timeout:
                    self.lost(known, f"no heartbeat for {self.peer_timeout:g}s")
            await trio.sleep(0.2)

    def attempts_of(self, peer: PeerID) -> list[Attempt]:
        """Every attempt a peer is running now, in any phase."""
        return [a for running in self.scheduler.running_attempts.values()
                for _, a in running.values() if a.peer == peer]

    def awaiting_answers(self, peer: PeerID) -> list[Attempt]:
        """Attempts the peer has not answered yet.

        An answered attempt stays running while the master fetches its
        output, but the peer owes nothing more on it (and sends no more
        heartbeats for it): its silence then is not a failure.
        """
        return [a for a in self.attempts_of(peer) if not a.aborted]

    def lost(self, peer: PeerID, reason: str) -> None:
        """A dead or silent peer: every task it still owes goes back to idle."""
        attempts = self.awaiting_answers(peer)
        self.scheduler.events.emit("peer-lost", peer=peer, reason=reason,
                                   detail={"tasks": len(attempts)})
        if attempts:
            log.warning("peer %s lost (%s); %d task(s) return to idle", peer, reason,
                        len(attempts))
            self.charge(peer, reason)
        for attempt in attempts:
            attempt.abort(Abort.LOST, reason)
        self._seen[peer] = trio.current_time()
        self._changed()

    def charge(self, peer: PeerID, reason: str) -> None:
        """Count one failure event against a peer.

        Every event counts: a peer that fails fast gets no free retries. One
        event is one charge however many tasks it took down: a peer that dies
        or falls silent holding five streams has failed once, not five times.
        So a failure counts only if the peer has been heard from (a frame, or
        a new assignment to it) since it was last charged; otherwise it is
        the same event seen again, on another stream.
        """
        now = trio.current_time()
        if self._heard.get(peer, -math.inf) <= self._charged.get(peer, -math.inf):
            return
        self._charged[peer] = now
        self.scheduler.book.failed(peer, now, reason=reason)
        self.act_on_exclusions()

    def exclude(self, peer: PeerID, reason: str, *, untrusted: bool = False) -> None:
        """Take a peer out of the job at once, with everything it still owes."""
        self.scheduler.book.exclude(peer, reason, untrusted=untrusted)
        self.act_on_exclusions()

    def act_on_exclusions(self) -> None:
        for record in self.scheduler.book.take_exclusions():
            log.warning("excluding peer %s from this job: %s", record.peer,
                        record.excluded_reason)
            peer = record.peer
            assert isinstance(peer, PeerID)
            for attempt in self.attempts_of(peer):
                attempt.abort(Abort.LOST, "its peer was excluded")
            self._changed()
