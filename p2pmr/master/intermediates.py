"""Where map outputs live, and running again the map tasks whose outputs are lost.

Map outputs stay on the peers that computed them (spec section 7): the
master keeps their CIDs and who holds them, and names those peers to the
reducers, which fetch from them directly. When no live peer holds a map
output that a reduce still needs (its holders died, or a reducer reports
that it cannot fetch it), the map task that made it runs again elsewhere,
as in the MapReduce paper. A map output is a pure function of the job's
code and the task's input, so the rerun reproduces its CIDs: the reduce
tasks that wait for it keep their inputs and only wait until it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import BlockNotFound
from ..network import Network
from ..storage.base import BlockStore
from ..storage.cid import CID
from .options import MasterOptions
from .outputs import MapOutput
from .plan import MAP, REDUCE, ReduceWork
from .scheduler import Scheduler, State, Task

__all__ = ["Intermediates"]

log = logging.getLogger(__name__)

_MAX_ADDRS = 1024  # provider addresses in one assignment


class Intermediates:
    """Who holds each map output; what is lost; what a reducer should ask.

    ``grace`` is how long a holder the master has not seen in this run
    (one journaled before a restart) still counts as alive: peers that
    outlived the master reconnect to it within seconds. ``probe_timeout``
    bounds the master's own look for an output a reducer says is lost.
    """

    def __init__(self, scheduler: Scheduler, network: Network, blocks: BlockStore,
                 options: MasterOptions, *, charge: Callable[[PeerID, str], None]) -> None:
        self.scheduler = scheduler
        self.network = network
        self.blocks = blocks
        self.grace = max(10.0, 3 * options.peer_timeout)
        self.probe_timeout = min(10.0, options.fetch_timeout)
        self._charge = charge
        self._started = trio.current_time()
        self._online: frozenset[object] = frozenset()
        self._graced = False
        self._made: dict[CID, set[int]] = {}  # partition CID -> the map tasks that make it
        self.reruns = 0

    # -- bookkeeping ----------------------------------------------------------------

    def note(self, task: Task) -> None:
        """A map task completed (or was restored): remember what it made."""
        output = task.output
        if isinstance(output, MapOutput):
            for cid in output.partitions:
                if cid is not None:
                    self._made.setdefault(cid, set()).add(task.index)
            self._unblock()

    def note_all(self) -> None:
        for task in self.scheduler.phase_tasks(MAP):
            if task.state is State.COMPLETED:
                self.note(task)

    def _alive(self, peer: object, now: float) -> bool:
        record = self.scheduler.book.records.get(peer)
        if record is None:  # not seen in this run yet
            return now - self._started < self.grace
        return record.online and not record.excluded

    def _connected(self, peer: PeerID) -> bool:
        record = self.scheduler.book.records.get(peer)
        return record is not None and record.online and not record.excluded

    def available(self, task: Task, now: float) -> bool:
        output = task.output
        return task.state is State.COMPLETED and isinstance(output, MapOutput) and (
            output.local or any(self._alive(p, now) for p in output.holders))

    def _needed(self, task: Task) -> bool:
        """Does a reduce still need a partition of this completed map task?"""
        output = task.output
        if not isinstance(output, MapOutput) or output.local or not output.needed():
            return False
        reduces = self.scheduler.phase_tasks(REDUCE)
        if not reduces:
            return True  # the reduce phase is still ahead: every output will be read
        return any(cid is not None and reduces[r].state is not State.COMPLETED
                   for r, cid in enumerate(output.partitions))

    # -- losses ---------------------------------------------------------------------

    def sweep(self) -> None:
        """Run again the map tasks whose every holder is gone, while a reduce
        needs them. Cheap unless the set of live peers changed."""
        now = trio.current_time()
        book = self.scheduler.book
        online = frozenset(p for p, r in book.records.items() if r.online and not r.excluded)
        graced = now - self._started >= self.grace
        if online == self._online and (self._graced or not graced):
            return
        self._online, self._graced = online, graced
        for task in self.scheduler.phase_tasks(MAP):
            if task.state is State.COMPLETED and self._needed(task) \
                    and not self.available(task, now):
                self._rerun(task, "every peer that held its output is gone", ())

    def rehome(self) -> int:
        """Before the reduce phase: run again, on another peer, each map task
        whose output only slow peers hold: peers that lost a backup race and
        whose tasks take ``Policy.slow_peer_factor`` times the typical. (Slow
        by timings alone is not enough evidence to run tasks again.)

        Every reducer fetches a partition of every map output, so one output
        on a peer ten times slower than the rest holds all of them back
        (measured in the swarm lab: seconds, against a tenth of a second to
        map the split again). The rerun gives the same CIDs; the slow copy
        stays, and the reducers wait for the fast one."""
        book, policy = self.scheduler.book, self.scheduler.policy
        slow = {p for p, r in book.records.items()
                if r.raced and r.slowness >= policy.slow_peer_factor}
        if not slow or all(r.peer in slow for r in book.usable()):
            return 0
        moved = 0
        for task in self.scheduler.phase_tasks(MAP):
            output = task.output
            if task.state is State.COMPLETED and isinstance(output, MapOutput) \
                    and self._needed(task) and output.holders \
                    and all(p in slow for p in output.holders):
                for peer in output.holders:  # not back to the same slow peer
                    task.failed_on[peer] = task.failed_on.get(peer, 0)
                self._rerun(task, "only a peer known to be slow holds its output", ())
                moved += 1
        return moved

    async def input_lost(self, reduce: Task, message: str) -> bool:
        """A reducer could not fetch some of its inputs: rerun the map tasks
        that made them. True if that explains the failure (the reducer is
        not at fault).

        A reducer's word alone never costs a holder: an input it names is
        lost only if the master cannot get a block of it from anyone either
        (a bounded probe, one block). Otherwise a lying reducer could have
        honest holders charged, and excluded.
        """
        work = reduce.payload
        if not isinstance(work, ReduceWork):
            return False
        now = trio.current_time()
        tasks = self.scheduler.phase_tasks(MAP)
        explained = False
        for cid in work.inputs:
            producers = [tasks[i] for i in sorted(self._made.get(cid, ()))]
            if any(t.state is not State.COMPLETED for t in producers):
                explained = True  # already running again
                continue
            outputs = [t.output for t in producers if isinstance(t.output, MapOutput)]
            if not outputs or any(o.local for o in outputs):
                continue  # the master has it: not lost (a corrupt copy is repair's)
            if not any(self.available(t, now) for t in producers):
                for task in producers:
                    self._rerun(task, "every peer that held its output is gone", ())
                explained = True
            elif str(cid) in message and not await self._served(cid, outputs):
                for task in producers:
                    output = task.output
                    assert isinstance(output, MapOutput)
                    blamed = [p for p in output.holders if self._connected(p)]
                    self._rerun(task, f"reduce task {reduce.index} could not fetch {cid}, "
                                      f"and no peer serves it", blamed)
                explained = True
        return explained

    async def _served(self, cid: CID, outputs: list[MapOutput]) -> bool:
        """Can the master get a block of this map output it does not have?"""
        missing = await self.blocks.missing(cid)
        if not missing:
            return True
        holders = list(dict.fromkeys(p for o in outputs for p in o.holders))
        try:
            await self.blocks.get(missing[0], timeout=self.probe_timeout, providers=holders)
        except BlockNotFound:
            return False
        return True

    def _rerun(self, task: Task, reason: str, blamed: Iterable[PeerID]) -> None:
        output = task.output
        assert isinstance(output, MapOutput)
        log.warning("map task %d runs again: %s", task.index, reason)
        for peer in blamed:
            task.failed_on[peer] = task.failed_on.get(peer, 0) + 1
            self._charge(peer, f"lost its output of map task {task.index}")
        self.scheduler.reset(task, reason)
        self.reruns += 1
        reduces = self.scheduler.phase_tasks(REDUCE)
        for r, cid in enumerate(output.partitions):
            if cid is not None and r < len(reduces) and reduces[r].state is not State.COMPLETED:
                reduces[r].ready = False  # until the map task is back

    def _unblock(self) -> None:
        reduces = [t for t in self.scheduler.phase_tasks(REDUCE) if not t.ready]
        if not reduces:
            return
        tasks = self.scheduler.phase_tasks(MAP)
        for reduce in reduces:
            work = reduce.payload
            assert isinstance(work, ReduceWork)
            if all(any(tasks[i].state is State.COMPLETED for i in self._made.get(cid, ()))
                   for cid in work.inputs):
                self.scheduler.mark_ready(reduce)

    # -- providers --------------------------------------------------------------------

    def providers(self, reduces: Iterable[Task]) -> tuple[list[PeerID], list[bytes]]:
        """The live peers holding the inputs of these reduce tasks, and where
        to dial them."""
        now = trio.current_time()
        tasks = self.scheduler.phase_tasks(MAP)
        peers: dict[PeerID, None] = {}
        for reduce in reduces:
            work = reduce.payload
            assert isinstance(work, ReduceWork)
            for cid in work.inputs:
                for index in self._made.get(cid, ()):
                    output = tasks[index].output
                    if isinstance(output, MapOutput):
                        for peer in output.holders:
                            if self._alive(peer, now):
                                peers[peer] = None
        addrs: list[bytes] = []
        for peer in peers:
            addrs.extend(self.network.addresses(peer))
        return list(peers), addrs[:_MAX_ADDRS]
