"""A hook for peers that misbehave on purpose, for fault-injection tests.

A test builds a chaos peer by subclassing :class:`Faults` and passing it to
:func:`~p2pmr.peer.register_protocol`; each method is called at one point of
the peer's work, and the defaults do nothing. The hook is public API, so
that renaming the peer's internals cannot silently turn the chaos off.
"""

from __future__ import annotations

from libp2p.peer.id import ID as PeerID

from ..job import runtime
from ..network import Stream
from ..wire.messages import (
    Assignment,
    Error,
    JobSpec,
    MapResult,
    MapTask,
    ReduceResult,
    ReduceTask,
)

__all__ = ["Faults"]


class Faults:
    """Where a peer may be made to misbehave. Every default behaves."""

    async def on_stream(self, stream: Stream, remote: PeerID) -> bool:
        """A trusted master opened a task stream. Return True to take the
        stream over: the peer then does nothing more with it."""
        return False

    def runtime(self) -> str:
        """The runtime this peer says it has, which decides the job code it
        refuses (spec section 3.2); a test peer may claim another."""
        return runtime()

    async def on_assignment(self, assignment: Assignment, remote: PeerID) -> Error | None:
        """A valid assignment arrived; an :class:`Error` (without an id) refuses it."""
        return None

    async def on_task(self, task: MapTask | ReduceTask, job: JobSpec
                      ) -> MapResult | ReduceResult | Error | None:
        """A task is about to run. Return an answer to send instead of running
        it (an error, say); or never return, to hang; None runs it."""
        return None

    async def on_result(self, task: MapTask | ReduceTask, job: JobSpec,
                        answer: MapResult | ReduceResult) -> MapResult | ReduceResult:
        """A task ran; what is returned is sent (a lie, say) instead."""
        return answer
