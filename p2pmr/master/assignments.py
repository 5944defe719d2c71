"""Carrying assignments to peers: one stream each, several tasks per stream.

This is the per-connection handler of the master (rust-libp2p's split): the
master's run loop decides which tasks go where; this sends them, follows
each task to its answer, turns the answer into a checked output or a
classified failure, and tells the scheduler. An attempt can be stopped on
its own (a backup won, it ran too long, its peer was lost): it is dropped
from its stream with a Cancel naming it. If the stream fails, every task
still pending on it fails, as one failure of its peer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable

import trio
from libp2p.peer.id import ID as PeerID

from ..records import SplitInfo
from ..wire.codes import ErrorCode
from ..wire.messages import (
    Assignment,
    Error,
    JobSpec,
    MapResult,
    MapTask,
    Phase,
    ReduceResult,
    ReduceTask,
    Split,
    TaskId,
)
from .client import Answer, AssignmentClient, Running
from .intermediates import Intermediates
from .liveness import PeerWatch
from .options import MasterOptions
from .outputs import MapOutput, Output, signature
from .plan import MAP, BoundaryWork, ReduceWork
from .results import AttemptFailed, Results, failure_of
from .scheduler import Abort, Attempt, FailureKind, Scheduler, State, Task

__all__ = ["Assignments"]

log = logging.getLogger(__name__)

Completed = Callable[[Task], Awaitable[None]]


class Assignments:
    """Runs assignments for one job, and accounts for what comes back."""

    def __init__(self, watch: PeerWatch, scheduler: Scheduler, results: Results,
                 intermediates: Intermediates, options: MasterOptions, job: JobSpec, *,
                 completed: Completed, input_failed: Callable[[Task], None],
                 changed: Callable[[], None]) -> None:
        self.watch = watch
        self.network = watch.network
        self.scheduler = scheduler
        self.results = results
        self.intermediates = intermediates
        self.options = options
        self.job = job
        self._completed = completed
        self._input_failed = input_failed
        self._changed = changed
        #: The peers that hold a map task's input (by task index), if known.
        self.holders: Callable[[int], set[Hashable]] = lambda index: set()

    # -- messages -----------------------------------------------------------------------

    def _task_id(self, task: Task, attempt: Attempt) -> TaskId:
        return TaskId(self.job.job, Phase.MAP if task.phase == MAP else Phase.REDUCE,
                      task.index, attempt.number)

    def _assignment(self, items: list[tuple[Task, Attempt]]) -> Assignment:
        maps: list[MapTask] = []
        reduces: list[ReduceTask] = []
        # Peers known to hold a split's blocks come first: the master may not
        # hold the input at all, and they are where it is.
        holders: dict[PeerID, None] = {}
        for task, attempt in items:
            task_id = self._task_id(task, attempt)
            work = task.payload
            if isinstance(work, BoundaryWork):
                maps.append(MapTask(task_id, records=work.records))
            elif isinstance(work, ReduceWork):
                reduces.append(ReduceTask(task_id, work.partition,
                                          tuple(work.inputs) if work.listing is None else (),
                                          work.listing))
            else:
                assert isinstance(work, SplitInfo) and work.block is not None
                maps.append(MapTask(task_id, split=Split(
                    work.block, work.path, work.offset, work.size, work.first, work.last,
                    work.more, work.sizes)))
                holders.update((p, None) for p in self.holders(task.index)
                               if isinstance(p, PeerID) and p != attempt.peer)
        providers = [*list(holders)[:8], self.network.local_peer]
        addrs: list[bytes] = []
        if reduces:
            # Map outputs are on the peers that made them: name those peers,
            # and say where to dial them (spec section 7).
            holding, addrs = self.intermediates.providers(t for t, _ in items)
            providers += [p for p in holding if p != self.network.local_peer]
        return Assignment(self.job, int(self.options.heartbeat_interval * 1000),
                          tuple(providers), tuple(maps), tuple(reduces), tuple(addrs))

    # -- one stream -----------------------------------------------------------------------

    async def run(self, peer: PeerID, items: list[tuple[Task, Attempt]]) -> None:
        """One stream, several tasks: send them, then take each answer as it comes."""
        pending: dict[int, tuple[Task, Attempt]] = {t.index: (t, a) for t, a in items}
        self.watch.heard(peer)  # a new assignment: any failure from here is a new event
        client = AssignmentClient(self.network, peer,
                                  connect_timeout=self.options.connect_timeout,
                                  read_timeout=self.options.peer_timeout,
                                  heard=self.watch.heard)
        failure: AttemptFailed | None = None
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                def handler(task: Task, attempt: Attempt) -> Callable[[Abort, str], None]:
                    def abort(kind: Abort, reason: str) -> None:
                        if pending.pop(task.index, None) is None:
                            return
                        if kind is Abort.SUPERSEDED:
                            self.scheduler.fail(task, attempt, FailureKind.CANCELLED, reason)
                            if not attempt.backup:
                                # A straggler that lost to its backup: it holds
                                # tasks without finishing them, so it earns less.
                                self.scheduler.book.slow(attempt.peer)
                        else:
                            # Lost with its peer, or timed out: whoever aborts
                            # charges the peer, once for the whole event.
                            self.failed(task, attempt, AttemptFailed(FailureKind.INFRA, reason),
                                        charge=False)
                        nursery.start_soon(client.cancel, self._task_id(task, attempt), reason)
                        if not pending:
                            scope.cancel()
                    return abort

                for task, attempt in items:
                    attempt.arm(handler(task, attempt))
                try:
                    await client.open()
                    # Only what is still pending: an attempt may have been
                    # superseded while the stream opened.
                    await client.send(self._assignment(list(pending.values())))
                    await self._answers(client, pending, nursery)
                except AttemptFailed as exc:
                    failure = exc
                    if exc.kind is FailureKind.UNREACHABLE and not exc.blame:
                        self.scheduler.book.offline(peer)
            if pending:
                abandoned = failure or AttemptFailed(FailureKind.INFRA, "assignment abandoned",
                                                     blame=False)
                for task, attempt in list(pending.values()):
                    pending.pop(task.index, None)
                    attempt.aborted = True
                    self.failed(task, attempt, abandoned, charge=False)
                self.charge_for(peer, abandoned)  # one stream, one failure
        await client.close(failed=failure is not None)
        self._changed()

    async def _answers(self, client: AssignmentClient,
                       pending: dict[int, tuple[Task, Attempt]], nursery: trio.Nursery) -> None:
        while pending:
            event = await client.next()
            if isinstance(event, Running):
                now = trio.current_time()
                for index in event.indices:
                    entry = pending.get(index)
                    if entry is not None and entry[1].running_since is None:
                        self.scheduler.running(entry[1], now, entry[0])
                continue
            assert isinstance(event, Answer)
            entry = pending.get(event.id.index)
            if entry is None:
                continue  # an answer for a task we cancelled
            task, attempt = entry
            message = event.message
            wrong_kind = isinstance(message, MapResult) != (task.phase == MAP) and \
                not isinstance(message, Error)
            if event.id.attempt != attempt.number or wrong_kind:
                # Still pending: the caller fails it with the rest of the stream.
                raise AttemptFailed(FailureKind.INFRA, "peer answered for the wrong task")
            del pending[event.id.index]
            attempt.aborted = True  # answered: no longer abortable through the stream
            nursery.start_soon(self.finish, task, attempt, message)

    # -- answers ------------------------------------------------------------------------

    async def finish(self, task: Task, attempt: Attempt,
                     message: MapResult | ReduceResult | Error) -> None:
        """Handle one task's answer: a checked output, or a classified failure."""
        if isinstance(message, Error):
            failure = failure_of(message)
            if failure.kind is FailureKind.INPUT and task.phase != MAP and \
                    await self.intermediates.input_lost(task, failure.message):
                # Map outputs were lost with (or by) their holders: they run
                # again, and the reducer is not at fault.
                failure = AttemptFailed(FailureKind.CANCELLED, failure.message, blame=False)
            self.failed(task, attempt, failure)
            if failure.kind is FailureKind.INPUT:
                self._input_failed(task)
            return
        peer = attempt.peer
        assert isinstance(peer, PeerID)
        try:
            output: Output
            if isinstance(message, MapResult):
                output = await self.results.map(task.payload, message, peer)
            else:
                output = await self.results.reduce(message, peer)
        except AttemptFailed as exc:
            self.failed(task, attempt, exc)
            return
        if attempt.number not in task.running:
            return  # aborted while we checked it
        won, liars = self.scheduler.succeed(task, attempt, output, trio.current_time(),
                                            signature=signature(output))
        if isinstance(output, MapOutput):
            self._holders(task, output, won)
        for liar in liars:
            assert isinstance(liar, PeerID)
            self.watch.exclude(liar, f"its result for {task.phase} task {task.index} "
                               f"disagreed with {self.options.verify} other peer(s)")
        self.watch.act_on_exclusions()
        if won:
            for other in list(task.running.values()):
                other.abort(Abort.SUPERSEDED, "another attempt finished first")
            await self._completed(task)
        self._changed()

    @staticmethod
    def _holders(task: Task, output: MapOutput, won: bool) -> None:
        """Every peer that returned the winning output holds a copy of it:
        the verifiers that agreed, and a backup that finished second."""
        kept = task.output
        if not isinstance(kept, MapOutput) or task.state is not State.COMPLETED:
            return
        if won:
            agreed = task.votes.get(signature(kept), set())
            kept.holders = list(dict.fromkeys([*kept.holders, *agreed]))  # type: ignore[list-item]
        elif kept is not output and signature(kept) == signature(output):
            kept.holders = list(dict.fromkeys([*kept.holders, *output.holders]))

    def failed(self, task: Task, attempt: Attempt, exc: AttemptFailed, *,
               charge: bool = True) -> None:
        """Record one failed attempt; with ``charge``, charge its peer (if at fault).

        Callers that fail several attempts for one event (a stream that
        broke under eight tasks) pass ``charge=False`` and charge once.
        """
        log.info("%s task %d attempt %d on %s failed: %s", task.phase, task.index,
                 attempt.number, attempt.peer, exc.message)
        self.scheduler.fail(task, attempt, exc.kind, exc.message, exc.traceback,
                            blame_peer=False, now=trio.current_time(), code=exc.code)
        if charge:
            peer = attempt.peer
            assert isinstance(peer, PeerID)
            self.charge_for(peer, exc)
        self._changed()

    def charge_for(self, peer: PeerID, exc: AttemptFailed) -> None:
        if exc.exclude:
            self.watch.exclude(peer, self._exclusion_reason(exc.message),
                               untrusted=exc.code is ErrorCode.NOT_AUTHORISED)
        elif exc.blame:
            self.watch.charge(peer, exc.message)
        elif exc.kind is FailureKind.BUSY:
            self.scheduler.book.busy(peer, trio.current_time())

    def _exclusion_reason(self, message: str) -> str:
        me = self.network.local_peer
        if message.startswith("NOT_AUTHORISED"):
            return (f"it does not trust this master (peer ID {me}). Restart it with "
                    f"`p2pmr peer --trust {me} ...`, or add that ID to the trusted_masters "
                    f"file in its repo (it is re-read on change)")
        if message.startswith("UNSUPPORTED_VERSION"):
            return f"it speaks another version of the protocol: {message}"
        return message
