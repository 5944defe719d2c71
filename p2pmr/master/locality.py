"""Where the input already is: run splits on the peers that hold their blocks.

A peer that holds a split's blocks maps it without moving a byte, while any
other peer must first fetch the whole run. So the master asks each peer, in
one Bitswap want-have round, which input blocks it holds, and gives each
peer the splits it holds before anything else.

A peer left with no split of its own gets one that nobody holds (it has to
be fetched whoever runs it). A split that other peers hold goes to it only
after it has waited ``wait`` seconds for work, as in delay scheduling: the
holders will usually get to their splits sooner than a stranger could fetch
them, and a holder that died or lags still loses its splits to the others
within seconds.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID as PeerID

from ..records import SplitInfo
from ..storage.base import BlockStore
from .scheduler import Task

__all__ = ["Locality", "LocalityReport"]

log = logging.getLogger(__name__)


@dataclass
class LocalityReport:
    """How much of the map phase ran where its input was, for the run report."""

    held_splits: int = 0         # splits some peer held when asked
    ran_on_holder: int = 0       # of those, completed by a holder
    ran_elsewhere: int = 0       # of those, completed by a peer that had to fetch
    bytes_moved: int = 0         # input bytes of splits completed away from their holders
    probes: dict[str, int] = field(default_factory=dict)  # peer -> splits it held

    def as_json(self) -> dict[str, object]:
        return {"held_splits": self.held_splits, "ran_on_holder": self.ran_on_holder,
                "ran_elsewhere": self.ran_elsewhere, "bytes_moved": self.bytes_moved,
                "held_by_peer": dict(sorted(self.probes.items()))}


class Locality:
    """Which peers hold which splits, and the order that gives each peer's work."""

    def __init__(self, tasks: Sequence[Task], blocks: BlockStore, idle: Callable[[Task], bool],
                 learned: Callable[[], None], *, wait: float, probe_timeout: float) -> None:
        self.blocks = blocks
        self._idle = idle        # a task any peer may take now
        self._learned = learned  # called when answers are in: dispatch again
        self.wait = wait
        self.probe_timeout = probe_timeout
        self._splits = {t.index: t.payload for t in tasks if isinstance(t.payload, SplitInfo)}
        self._tasks = {t.index: t for t in tasks}
        self._holders: dict[int, set[Hashable]] = {}
        self._local: dict[Hashable, list[int]] = {}
        self._probed: set[Hashable] = set()    # asked (or being asked)
        self._answered: set[Hashable] = set()  # asked, and the answers are in
        self._starved: dict[Hashable, float] = {}
        self.report = LocalityReport()

    def holders(self, index: int) -> set[Hashable]:
        return self._holders.get(index, set())

    # -- learning -------------------------------------------------------------------------

    async def probe(self, peers: Sequence[PeerID]) -> None:
        """Ask ``peers`` (not yet asked) which blocks of the idle splits they hold."""
        peers = [p for p in peers if p not in self._probed]
        if not peers:
            return
        self._probed.update(peers)
        try:
            await self._probe(peers)
        finally:
            self._answered.update(peers)
            self._learned()

    async def _probe(self, peers: Sequence[PeerID]) -> None:
        wanted = {i: s for i, s in self._splits.items() if self._idle(self._tasks[i])}
        cids = [cid for split in wanted.values() for cid in split.blocks]
        if not cids:
            return
        try:
            with trio.fail_after(self.probe_timeout + 1.0):
                found = await self.blocks.holders(cids, peers, timeout=self.probe_timeout)
        except trio.TooSlowError:
            found = {}
        for index, split in wanted.items():
            held = set.intersection(*(found.get(c, set()) for c in split.blocks)) \
                if split.blocks else set()
            for peer in held:
                self._holders.setdefault(index, set()).add(peer)
                heapq.heappush(self._local.setdefault(peer, []), index)
                self.report.probes[str(peer)] = self.report.probes.get(str(peer), 0) + 1
        self.report.held_splits = len(self._holders)
        if found:
            log.info("locality: %s", ", ".join(
                f"{peer} holds {n} split(s)" for peer, n in self.report.probes.items()))

    # -- choosing ------------------------------------------------------------------------

    def first_for(self, peer: Hashable, idle: Callable[[Task], bool]) -> Task | None:
        """A split ``peer`` holds and may run now, if any."""
        heap = self._local.get(peer, [])
        while heap:
            task = self._tasks[heap[0]]
            if idle(task):
                self._starved.pop(peer, None)
                return task
            heapq.heappop(heap)  # taken since, or done
        return None

    def may_take(self, task: Task, peer: Hashable, usable: Callable[[Hashable], bool]) -> bool:
        """Whether ``peer``, holding none of its own, may take ``task`` now.

        Any task but a split, at once: nobody holds a boundary task's input.
        A split no usable peer holds, once every peer asked has answered (a
        peer still to answer may hold it). A split another usable peer
        holds, only once this peer has found nothing else for ``wait``
        seconds, which also bounds the wait for answers.
        """
        if task.index not in self._splits:
            return True
        others = [h for h in self.holders(task.index) if h != peer and usable(h)]
        if not others and peer in self._answered and self._probed <= self._answered:
            self._starved.pop(peer, None)
            return True
        now = time.monotonic()
        return now - self._starved.setdefault(peer, now) >= self.wait

    def completed(self, task: Task, peer: Hashable) -> None:
        """Count where a split ran, for the run report."""
        split = self._splits.get(task.index)
        holders = self._holders.get(task.index)
        if split is None or not holders:
            return
        if peer in holders:
            self.report.ran_on_holder += 1
        else:
            self.report.ran_elsewhere += 1
            self.report.bytes_moved += split.size

