"""A p2pmr peer that misbehaves on purpose, for the fault-tolerance tests.

    python chaos_peer.py MODE --repo DIR --bootstrap MULTIADDR --trust PEER_ID [--seed N]

It is a real peer, made to misbehave through the public fault-injection
hook (:class:`p2pmr.peer.Faults`). Modes:

* ``good``: a normal peer.
* ``exit-now``: connects, then exits as soon as it is offered work.
* ``exit-random``: works normally but kills itself (``os._exit``) in the
  middle of a random task, with probability ``--rate`` per task.
* ``hang-after-accept``: accepts assignments and heartbeats forever, but
  never answers.
* ``hang-silent``: reads an assignment and then says nothing at all.
* ``liar``: answers map tasks with made-up partitions (well-formed, wrong).
* ``forgetful``: answers map tasks correctly, then deletes the outputs it
  named before any reducer could fetch them (as a peer whose disk fails).

Peers that fail fast, each in its own way, on every task they are given:

* ``error-fast``: answers every task at once with ``Error{INTERNAL}``.
* ``refuse``: refuses every whole assignment (``Error{BAD_REQUEST}``, no id).
* ``oversize``: answers with a frame whose length prefix exceeds the limit.
* ``garbage``: answers with bytes that are no frame at all.
* ``bad-cid``: answers map tasks with partitions that are not CIDs.
* ``fake-user-error``: claims the job's code raised, with a made-up traceback.
* ``no-input``: claims it could not fetch any task's input.
* ``cancel-fast``: answers every task with ``Error{CANCELLED}``, unasked.
* ``busy``: says it is busy, always.

Peers that claim another runtime (spec section 3.2), so refuse every job's
code as a peer with another Python or cloudpickle installed does:

* ``other-python``: claims the next minor version of this Python.
* ``other-cloudpickle``: claims the next major version of cloudpickle.

It prints the same ready lines as ``p2pmr peer``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import trio
from libp2p.peer.id import ID as PeerID

from p2pmr.encoding import MSGPACK
from p2pmr.job import runtime
from p2pmr.network import Stream
from p2pmr.node import Node, open_node
from p2pmr.peer import Faults, PeerConfig, register_protocol
from p2pmr.ready import announce_ready
from p2pmr.settings import DEFAULT_LISTEN
from p2pmr.storage import unixfs
from p2pmr.storage.varint import encode_uvarint
from p2pmr.wire._pb import mapreduce_pb2 as pb  # raw frames, for the lies types forbid
from p2pmr.wire.codes import ErrorCode
from p2pmr.wire.framing import FrameReader
from p2pmr.wire.messages import (
    Error,
    JobSpec,
    MapResult,
    MapTask,
    ReduceResult,
    ReduceTask,
)

# Fail every task at once with this error code.
FAST_ERRORS = {"error-fast": ErrorCode.INTERNAL, "fake-user-error": ErrorCode.USER_CODE_ERROR,
               "no-input": ErrorCode.INPUT_NOT_FOUND, "cancel-fast": ErrorCode.CANCELLED}
REFUSALS = {"refuse": ErrorCode.BAD_REQUEST, "busy": ErrorCode.BUSY}
OTHER_RUNTIMES = ("other-python", "other-cloudpickle")
MODES = ["good", "exit-now", "exit-random", "hang-after-accept", "hang-silent", "liar",
         "forgetful", "oversize", "garbage", "bad-cid", *FAST_ERRORS, *REFUSALS, *OTHER_RUNTIMES]


class Chaos(Faults):
    def __init__(self, node: Node, mode: str, rate: float, rng: random.Random) -> None:
        self.node = node
        self.mode = mode
        self.rate = rate
        self.rng = rng

    def runtime(self) -> str:
        python, pickler = runtime().split()  # "cpython-3.11", "cloudpickle-3.1.3"
        if self.mode == "other-python":
            major, minor = python.split("-")[1].split(".")
            return f"{python.split('-')[0]}-{major}.{int(minor) + 1} {pickler}"
        if self.mode == "other-cloudpickle":
            return f"{python} cloudpickle-{int(pickler.split('-')[1].split('.')[0]) + 1}.0.0"
        return runtime()

    async def on_stream(self, stream: Stream, remote: PeerID) -> bool:
        if self.mode == "exit-now":
            os._exit(3)
        if self.mode == "hang-silent":
            await FrameReader(stream).read(10)
            await trio.sleep_forever()
        if self.mode in ("oversize", "garbage", "bad-cid"):
            assignment = await FrameReader(stream).read(10)
            if self.mode == "bad-cid" and assignment is not None:
                await stream.write(self._bad_results(assignment))
            else:
                junk = encode_uvarint(64 * 1024 * 1024) if self.mode == "oversize" else b""
                await stream.write(junk + self.rng.randbytes(200))
            await trio.sleep(1)
            return True
        return False

    def _bad_results(self, assignment: object) -> bytes:
        out = b""
        for task in getattr(assignment, "maps", ()):
            result = pb.MapResult(
                id=pb.TaskId(job=bytes(task.id.job), phase=pb.MAP, index=task.id.index,
                             attempt=task.id.attempt),
                partitions=[b"\x01\x02 not a CID"] * assignment.job.reducers)  # type: ignore[attr-defined]
            payload = pb.Frame(version=1, map_result=result).SerializeToString()
            out += encode_uvarint(len(payload)) + payload
        return out

    async def on_assignment(self, assignment: object, remote: PeerID) -> Error | None:
        code = REFUSALS.get(self.mode)
        return Error(code, f"chaos: {self.mode}") if code is not None else None

    async def on_task(self, task: MapTask | ReduceTask, job: JobSpec
                      ) -> MapResult | ReduceResult | Error | None:
        code = FAST_ERRORS.get(self.mode)
        if code is not None:
            return Error(code, f"chaos: {self.mode}", "Traceback (made up)\n", task.id)
        if self.mode == "hang-after-accept":
            await trio.sleep_forever()
        if self.mode == "exit-random" and self.rng.random() < self.rate:
            await trio.sleep(self.rng.uniform(0, 0.5))
            os._exit(4)
        return None

    async def on_result(self, task: MapTask | ReduceTask, job: JobSpec,
                        answer: MapResult | ReduceResult) -> MapResult | ReduceResult:
        if not isinstance(answer, MapResult):
            return answer
        if self.mode == "forgetful":
            await self._forget(answer)
        if self.mode == "liar":
            # Plausible but wrong partitions.
            fake = MSGPACK.encode_partition([(MSGPACK.dumps("lie"),
                                              [self.rng.randrange(10**6)])])
            cid = await unixfs.add_bytes(self.node.blocks, fake)
            return MapResult(answer.id, (cid,) + (None,) * (job.reducers - 1),
                             (1,) + (0,) * (job.reducers - 1), answer.head, answer.tail,
                             answer.no_newline, answer.records_in, 1, answer.timings)
        return answer

    async def _forget(self, result: MapResult) -> None:
        if result.blocks:  # sent inline: nothing left to forget
            return
        local = self.node.local
        assert local is not None
        for root in result.partitions:
            if root is not None:
                for seg in await unixfs.file_segments(local, root):
                    await local.delete(seg.cid)
                await local.delete(root)


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    async with open_node(args.repo, bootstrap=args.bootstrap,
                         listen=args.listen or DEFAULT_LISTEN) as node:
        service = register_protocol(node, trust=args.trust, config=PeerConfig(
            workers=args.workers), faults=Chaos(node, args.mode, args.rate, rng))
        announce_ready(node, service)
        with trio.open_signal_receiver(15, 2) as signals:
            async for _ in signals:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--trust", action="append", default=[])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.3)
    trio.run(main, parser.parse_args())
    sys.exit(0)
