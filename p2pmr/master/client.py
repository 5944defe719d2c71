"""The master's side of one assignment stream, as typed events.

Opens the stream, sends the assignment, and turns what the peer sends back
into :class:`Running` and :class:`Answer` events until the caller has every
answer it waits for. Every read has the heartbeat deadline; a stream that
ends, breaks or carries something the protocol does not allow there raises
:class:`~.results.AttemptFailed` for every task still on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import ProtocolError
from ..network import Network, Stream
from ..wire.framing import PROTOCOL_ID, FrameReader, FrameWriter
from ..wire.messages import (
    Accepted,
    Assignment,
    Cancel,
    Error,
    MapResult,
    Progress,
    ReduceResult,
    TaskId,
)
from .results import AttemptFailed, failure_of
from .scheduler import FailureKind

__all__ = ["Answer", "AssignmentClient", "Event", "Running"]


@dataclass(frozen=True, slots=True)
class Running:
    """The peer reports these tasks of the assignment executing now."""

    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """The peer's one answer for one task."""

    id: TaskId
    message: MapResult | ReduceResult | Error


Event: TypeAlias = Running | Answer


class AssignmentClient:
    """One assignment, one stream, seen from the master."""

    def __init__(self, network: Network, peer: PeerID, *, connect_timeout: float,
                 read_timeout: float, heard: Callable[[PeerID], None]) -> None:
        self.network = network
        self.peer = peer
        self.heard = heard  # told of every frame: a sign of life
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.stream: Stream | None = None
        self._reader: FrameReader | None = None
        self._writer: FrameWriter | None = None

    async def open(self) -> None:
        """Open the stream. A peer that is gone (or going) is no one's fault;
        a peer still connected that will not take a stream is at fault."""
        try:
            with trio.fail_after(self.connect_timeout):
                self.stream = await self.network.open_stream(self.peer, PROTOCOL_ID)
        except Exception as exc:
            raise AttemptFailed(FailureKind.UNREACHABLE, f"cannot open a task stream: {exc}",
                                blame=self.network.is_connected(self.peer)) from None
        self._reader = FrameReader(self.stream)
        self._writer = FrameWriter(self.stream, timeout=self.connect_timeout)

    async def send(self, assignment: Assignment) -> None:
        assert self._writer is not None
        try:
            await self._writer.write(assignment)
        except ProtocolError as exc:
            raise AttemptFailed(FailureKind.INFRA, f"task stream failed: {exc}") from None

    async def next(self) -> Event:
        """The next event; raises AttemptFailed when the stream fails."""
        assert self._reader is not None
        while True:
            try:
                message = await self._reader.read(self.read_timeout)
            except ProtocolError as exc:
                raise AttemptFailed(FailureKind.INFRA, f"task stream failed: {exc}") from None
            if message is None:
                raise AttemptFailed(FailureKind.INFRA, "peer closed the stream without results")
            self.heard(self.peer)
            if isinstance(message, Accepted):
                continue
            if isinstance(message, Progress):
                return Running(message.running)
            if isinstance(message, Error) and message.id is None:
                raise failure_of(message)  # the whole assignment refused
            if isinstance(message, (MapResult, ReduceResult, Error)):
                assert message.id is not None
                return Answer(message.id, message)
            raise AttemptFailed(FailureKind.INFRA,
                                f"peer sent a {type(message).__name__} on a task stream")

    async def cancel(self, task_id: TaskId, reason: str) -> None:
        """Tell the peer to drop one task; quietly, within 2 s."""
        if self._writer is None:
            return
        with trio.move_on_after(2):
            try:
                await self._writer.write(Cancel(reason, task_id))
            except ProtocolError:
                pass

    async def close(self, *, failed: bool) -> None:
        if self.stream is not None:
            with trio.CancelScope(shield=True):
                if failed:
                    await self.stream.reset()
                else:
                    await self.stream.close()
