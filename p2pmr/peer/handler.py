"""One assignment stream on a peer, once the assignment has been accepted.

Sends ``Accepted``, then ``Progress`` at least every ``heartbeat_ms`` and
whenever a task starts executing; runs the tasks (as many at once as there
are workers); answers each with exactly one result or error carrying its
id; and stops a task on ``Cancel{id}``, or all of them on ``Cancel`` without
an id or when the stream ends (spec section 4).
"""

from __future__ import annotations

import logging
import traceback
from typing import Final

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import ProtocolError
from ..wire.codes import ErrorCode
from ..wire.framing import FrameReader, FrameWriter
from ..wire.messages import (
    Accepted,
    Assignment,
    Cancel,
    Error,
    MapResult,
    MapTask,
    Message,
    Progress,
    ReduceResult,
    ReduceTask,
)
from .faults import Faults
from .tasks import Progress as TaskProgress
from .tasks import TaskFailed, TaskRunner

__all__ = ["AssignmentHandler"]

log = logging.getLogger(__name__)

_MIN_HEARTBEAT: Final = 0.05
_MAX_HEARTBEAT: Final = 30.0
_REACH_TIMEOUT: Final = 10.0  # dialling the providers a master named


class AssignmentHandler:
    """Runs one accepted assignment to its end on its stream."""

    def __init__(self, assignment: Assignment, tasks: list[MapTask | ReduceTask],
                 remote: PeerID, reader: FrameReader, writer: FrameWriter, runner: TaskRunner,
                 faults: Faults, *, wall_seconds: float) -> None:
        self.assignment = assignment
        self.tasks = tasks
        self.remote = remote
        self.reader = reader
        self.writer = writer
        self.runner = runner
        self.faults = faults
        self.wall_seconds = wall_seconds
        self.progress = TaskProgress()
        self.failed = 0
        providers = list(assignment.providers)
        if remote not in providers:
            providers.append(remote)
        self.providers = providers
        beat = assignment.heartbeat_ms / 1000.0 if assignment.heartbeat_ms else 1.0
        self.interval = min(max(beat, _MIN_HEARTBEAT), _MAX_HEARTBEAT)

    async def run(self) -> None:
        await self.writer.write(Accepted(queued=self.runner.queued()))
        scopes: dict[int, trio.CancelScope] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats)
            nursery.start_soon(self._watch, scopes, nursery.cancel_scope)
            if self.assignment.provider_addrs:
                # Map outputs live on the peers that made them (spec section
                # 7): be connected to them before block exchange looks for
                # the inputs, or it would give up on peers it never asked.
                await self.runner.node.network.reach(self.assignment.provider_addrs,
                                                     timeout=_REACH_TIMEOUT)
            async with trio.open_nursery() as tasks:
                for task in self.tasks:
                    scopes[task.id.index] = scope = trio.CancelScope()
                    tasks.start_soon(self._run_one, task, scope)
            nursery.cancel_scope.cancel()

    async def _watch(self, scopes: dict[int, trio.CancelScope],
                     everything: trio.CancelScope) -> None:
        """Cancel tasks on Cancel frames; everything when the master goes."""
        while True:
            try:
                message = await self.reader.read(timeout=float("inf"))
            except ProtocolError:
                message = None
            if message is None:
                everything.cancel()
                return
            if not isinstance(message, Cancel):
                continue
            if message.id is None:
                everything.cancel()
                return
            scope = scopes.get(message.id.index)
            if scope is not None:
                scope.cancel()

    async def _heartbeats(self) -> None:
        progress = self.progress
        while True:
            with trio.move_on_after(self.interval):
                await progress.changed.wait()
            progress.changed = trio.Event()
            try:
                await self.writer.write(Progress(progress.records,
                                                 tuple(sorted(progress.running))))
            except ProtocolError as exc:
                log.debug("heartbeat failed, the master is gone: %s", exc)
                return

    async def _run_one(self, task: MapTask | ReduceTask, scope: trio.CancelScope) -> None:
        answer: Message | None = None
        job = self.assignment.job
        with scope:
            with trio.move_on_after(self.wall_seconds) as wall:
                try:
                    answer = await self.faults.on_task(task, job)
                    if answer is None:
                        result = await self.runner.run(task, job, self.providers, self.progress)
                        answer = await self.faults.on_result(task, job, result)
                except TaskFailed as exc:
                    answer = Error(exc.code, exc.message, exc.traceback, task.id)
                except Exception as exc:  # a bug of ours: fail this task, not the stream
                    log.exception("internal error running task %d", task.id.index)
                    answer = Error(ErrorCode.INTERNAL, f"internal error on the peer: {exc!r}",
                                   traceback.format_exc(), task.id)
            if wall.cancelled_caught:
                answer = Error(ErrorCode.LIMIT_EXCEEDED, f"task exceeded the peer's "
                               f"{self.wall_seconds:g}s wall-clock limit", id=task.id)
        if answer is None:
            log.debug("task %d cancelled by the master", task.id.index)
            return
        if isinstance(answer, Error):
            self.failed += 1
        elif not isinstance(answer, (MapResult, ReduceResult)):  # pragma: no cover
            raise TypeError(f"not an answer: {answer!r}")
        try:
            await self.writer.write(answer)
        except ProtocolError as exc:
            log.debug("could not send the answer for task %d: %s", task.id.index, exc)
