"""The peer's policy: whom it serves, how much, and on which workers.

For each task stream, in this order (spec section 4):

1. the sender's peer ID, which the network authenticated, must be a
   trusted master: otherwise ``NOT_AUTHORISED``, before anything is read,
   fetched, decoded or run;
2. limits on open streams, per master and in all (``BUSY``);
3. one frame, within a deadline and a size limit: a valid assignment
   (``BAD_REQUEST``, ``UNSUPPORTED_VERSION``), within the limit on tasks
   per master (``BUSY``);
4. then :class:`~.handler.AssignmentHandler` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID as PeerID

from ..errors import NodeError, ProtocolError, UnsupportedVersion
from ..job import runtime_mismatch
from ..network import Stream
from ..node import Node
from ..wire.codes import ErrorCode
from ..wire.framing import PROTOCOL_ID, FrameReader, FrameWriter
from ..wire.messages import Assignment, Error
from ..wire.validation import validate_assignment
from .config import PeerConfig
from .faults import Faults
from .handler import AssignmentHandler
from .tasks import TaskRunner
from .trust import TRUST_FILE, Trust
from .workers import ProcessWorkers, WorkerPool

__all__ = ["PeerService", "PeerStats", "register_protocol"]

log = logging.getLogger(__name__)


@dataclass
class PeerStats:
    assignments: int = 0
    refused: int = 0
    failed: int = 0


class PeerService:
    """Serves map and reduce tasks on one node. Create with :func:`register_protocol`."""

    def __init__(self, node: Node, config: PeerConfig, trust: Trust, *,
                 workers: WorkerPool | None = None, faults: Faults | None = None) -> None:
        self.node = node
        self.config = config
        self.trust = trust
        self.faults = faults or Faults()
        if config.read_stores:
            _read_from(node, config.read_stores)
        self.workers = workers or ProcessWorkers(config.workers, config.limits)
        self.runner = TaskRunner(node, config, self.workers)
        self.stats = PeerStats()
        self._active: dict[PeerID, int] = {}
        self._streams: dict[PeerID, int] = {}
        self._ready = trio.Event()

    async def run(self) -> None:
        """Own the workers for the node's lifetime."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.workers.serve)
            self._ready.set()

    async def handle(self, stream: Stream) -> None:
        remote = stream.remote_peer
        writer = FrameWriter(stream, timeout=10)
        # Who is asking decides everything else: nothing an untrusted peer
        # sends is even decoded.
        if not self.trust.allows(remote):
            log.warning("refused a stream from untrusted peer %s", remote)
            await self._refuse(writer, ErrorCode.NOT_AUTHORISED,
                               f"peer {remote} is not a trusted master of this peer")
            await stream.close()
            return
        if self._streams.get(remote, 0) >= self.config.max_streams_per_peer or \
                sum(self._streams.values()) >= self.config.max_streams:
            await self._refuse(writer, ErrorCode.BUSY, "too many open streams")
            await stream.reset()
            return
        self._streams[remote] = self._streams.get(remote, 0) + 1
        try:
            if await self.faults.on_stream(stream, remote):
                return
            await self._serve(remote, FrameReader(stream, max_size=self.config.max_frame_size),
                              writer)
        except ProtocolError as exc:
            log.debug("stream from %s: %s", remote, exc)
            await stream.reset()
        except Exception:  # never let one stream take the peer down
            log.exception("unexpected error serving %s", remote)
            await stream.reset()
        else:
            await stream.close()
        finally:
            self._streams[remote] -= 1
            if not self._streams[remote]:
                del self._streams[remote]

    async def _refuse(self, writer: FrameWriter, code: ErrorCode, message: str) -> None:
        self.stats.refused += 1
        with trio.move_on_after(5):
            try:
                await writer.write(Error(code, message))
            except ProtocolError:
                pass

    async def _serve(self, remote: PeerID, reader: FrameReader, writer: FrameWriter) -> None:
        try:
            message = await reader.read(self.config.first_frame_timeout)
        except UnsupportedVersion as exc:
            await self._refuse(writer, ErrorCode.UNSUPPORTED_VERSION, str(exc))
            return
        except ProtocolError as exc:
            await self._refuse(writer, ErrorCode.BAD_REQUEST, str(exc))
            return
        if message is None:
            return
        if not isinstance(message, Assignment):
            await self._refuse(writer, ErrorCode.BAD_REQUEST,
                               f"expected an assignment, got a {type(message).__name__}")
            return
        try:
            tasks = validate_assignment(message)
        except ProtocolError as exc:
            await self._refuse(writer, ErrorCode.BAD_REQUEST, f"malformed assignment: {exc}")
            return
        # Before anything is fetched or run: this peer could never load the code.
        mismatch = runtime_mismatch(message.job.runtime, self.faults.runtime())
        if mismatch is not None:
            log.warning("refused a job from %s: %s", remote, mismatch)
            await self._refuse(writer, ErrorCode.BAD_JOB, mismatch)
            return
        refusal = await self.faults.on_assignment(message, remote)
        if refusal is not None:
            await self._refuse(writer, refusal.code, refusal.message)
            return
        active = self._active.get(remote, 0)
        if active + len(tasks) > self.config.max_tasks_per_master:
            await self._refuse(writer, ErrorCode.BUSY, f"{active} tasks from this master "
                               f"already here; limit {self.config.max_tasks_per_master}")
            return
        self._active[remote] = active + len(tasks)
        try:
            await self._ready.wait()
            log.debug("assignment of %d task(s) from %s", len(tasks), remote)
            await self.node.network.introduce(remote)
            handler = AssignmentHandler(message, tasks, remote, reader, writer, self.runner,
                                        self.faults, wall_seconds=self.config.task_wall_seconds)
            self.stats.assignments += 1
            await handler.run()
            self.stats.failed += handler.failed
        finally:
            self._active[remote] -= len(tasks)
            if not self._active[remote]:
                del self._active[remote]


def _read_from(node: Node, roots: Iterable[str]) -> None:
    """Let the node's store read other repos' stores in place (PeerConfig.read_stores)."""
    from ..storage.embedded import EmbeddedStore

    if not isinstance(node.blocks, EmbeddedStore):
        raise NodeError("--read-store needs the embedded block store (not --ipfs-api, not "
                        "an in-memory node)")
    node.blocks.read_from(list(roots))


def register_protocol(node: Node, *, trust: Iterable[str | PeerID] = (),
                      trust_any: bool = False, workers: int | None = None,
                      allow_pickle: bool = False, config: PeerConfig | None = None,
                      faults: Faults | None = None, pool: WorkerPool | None = None,
                      master_later: bool = False) -> PeerService:
    """Make ``node`` a worker: serve ``/ipfs/mapreduce/1.0.0`` on it.

    Masters are trusted if listed in ``trust`` or in the repo's
    ``trusted_masters`` file; ``trust_any`` trusts every master (closed test
    swarms only). ``workers`` is how many tasks run at once (default: the
    CPU count), each in its own process. ``faults`` makes the peer misbehave
    on purpose (fault-injection tests; see :class:`~.faults.Faults`), and
    ``pool`` replaces its worker processes (:mod:`p2pmr.testing`).
    ``master_later`` says the master to trust is added later
    (``service.trust.add``), as local peers learn theirs once it is up.
    """
    if config is None:
        config = PeerConfig(allow_pickle=allow_pickle) if not workers else \
            PeerConfig(allow_pickle=allow_pickle, workers=workers)
    service = PeerService(node, config,
                          Trust(trust, trust_any=trust_any, file=node.repo / TRUST_FILE),
                          workers=pool, faults=faults)
    node.network.serve(PROTOCOL_ID, service.handle)
    node.spawn(service.run)
    node.spawn(node.network.announce)
    log.info("serving %s with %d worker(s) for %s", PROTOCOL_ID, config.workers,
             service.trust.describe())
    if not trust_any and not master_later and not service.trust.count():
        log.warning("this peer trusts no master, so it will refuse every job. Restart it "
                    "with --trust MASTER_PEER_ID (`p2pmr id --repo MASTER_REPO` prints it; "
                    "trust=[...] in register_protocol), or list master IDs in %s, which is "
                    "re-read when it changes", node.repo / TRUST_FILE)
    return service
