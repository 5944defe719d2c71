"""A p2pmr peer that misbehaves on purpose, for the fault-tolerance tests.

    python chaos_peer.py MODE --repo DIR --bootstrap MULTIADDR --trust PEER_ID [--seed N]

Modes:

* ``good``: a normal peer.
* ``exit-now``: connects, then exits as soon as it is offered work.
* ``exit-random``: works normally but kills itself (``os._exit``) in the
  middle of a random task, with probability ``--rate`` per task.
* ``hang-after-accept``: accepts assignments and heartbeats forever, but
  never answers.
* ``hang-silent``: reads an assignment and then says nothing at all.
* ``liar``: answers map tasks with made-up partitions (well-formed, wrong).
* ``forgetful``: answers map tasks correctly, then deletes the outputs it
  named before the master could fetch them (as a peer whose disk fails).

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

It prints the same "Peer ID / Listening on / Ready." lines as ``p2pmr peer``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from typing import Any

import trio

from p2pmr.encoding import MSGPACK
from p2pmr.node import open_node
from p2pmr.peer import TRUST_FILE, PeerConfig, PeerService, Trust
from p2pmr.protocol import PROTOCOL_ID, error_frame, pb
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.varint import encode_uvarint

# Fail every task at once with this error code.
FAST_ERRORS = {"error-fast": pb.INTERNAL, "fake-user-error": pb.USER_CODE_ERROR,
               "no-input": pb.INPUT_NOT_FOUND, "cancel-fast": pb.CANCELLED}


class ChaosService(PeerService):
    def __init__(self, *args: Any, mode: str, rate: float, rng: random.Random) -> None:
        super().__init__(*args)
        self.mode = mode
        self.rate = rate
        self.rng = rng

    async def _serve(self, remote: Any, reader: Any, writer: Any) -> None:
        if self.mode == "exit-now":
            os._exit(3)
        if self.mode == "hang-silent":
            await reader.read(10)
            await trio.sleep_forever()
        if self.mode in ("refuse", "busy", "oversize", "garbage"):
            await reader.read(10)
            if self.mode == "refuse":
                await self._refuse(writer, pb.BAD_REQUEST, "chaos: I refuse everything")
            elif self.mode == "busy":
                await self._refuse(writer, pb.BUSY, "chaos: always busy")
            else:
                junk = encode_uvarint(64 * 1024 * 1024) if self.mode == "oversize" else b""
                await writer.stream.write(junk + self.rng.randbytes(200))
                await trio.sleep(1)
            return
        await super()._serve(remote, reader, writer)

    async def _run_one(self, kind: str, task: Any, assignment: Any, remote: Any, state: Any,
                       writer: Any, *args: Any) -> None:
        code = FAST_ERRORS.get(self.mode)
        if code is not None:
            await writer.write(error_frame(code, f"chaos: {self.mode}",
                                           "Traceback (made up)\n", task.id))
            return
        await self._behave(kind, task, assignment, remote, state, writer, *args)

    async def _behave(self, kind: str, task: Any, *args: Any) -> None:
        if self.mode == "hang-after-accept":
            await trio.sleep_forever()
        if self.mode == "exit-random" and self.rng.random() < self.rate:
            await trio.sleep(self.rng.uniform(0, 0.5))
            os._exit(4)
        await super()._run_one(kind, task, *args)

    async def _map(self, task: Any, assignment: Any, remote: Any, state: Any) -> pb.Frame:
        frame = await super()._map(task, assignment, remote, state)
        if self.mode == "forgetful":
            await self._forget(frame.map_result)
        if self.mode == "bad-cid":
            result = frame.map_result
            reducers = assignment.job.reducers
            del result.partitions[:]
            result.partitions.extend([b"\x01\x02 not a CID"] * reducers)
            return frame
        if self.mode != "liar":
            return frame
        # Replace the partitions with plausible but wrong ones.
        result = frame.map_result
        reducers = assignment.job.reducers
        fake = MSGPACK.encode_partition([(MSGPACK.dumps("lie"), [self.rng.randrange(10**6)])])
        cid = await unixfs.add_bytes(self.node.blocks, fake)
        del result.partitions[:]
        del result.blocks[:]
        result.partitions.extend([bytes(cid)] + [b""] * (reducers - 1))
        del result.partition_records[:]
        result.partition_records.extend([1] + [0] * (reducers - 1))
        return frame


    async def _forget(self, result: Any) -> None:
        if result.blocks:  # sent inline: nothing left to forget
            return
        local = self.node.local
        assert local is not None
        for raw in result.partitions:
            if raw:
                root = CID.from_bytes(raw)
                for seg in await unixfs.file_segments(local, root):
                    await local.delete(seg.cid)
                await local.delete(root)


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    async with open_node(args.repo, bootstrap=args.bootstrap) as node:
        config = PeerConfig(workers=args.workers)
        service = ChaosService(node, config, Trust(args.trust, file=node.repo / TRUST_FILE),
                               mode=args.mode, rate=args.rate, rng=rng)
        node.host.set_stream_handler(PROTOCOL_ID, service.handle)
        node.spawn(service.run)
        push = getattr(node.host, "_push_identify_to_all_peers", None)
        if push is not None:
            node.spawn(push)
        print(f"Peer ID: {node.peer_id}")
        print("Listening on:")
        for addr in node.multiaddrs:
            print(f"  {addr}")
        print("Ready.", flush=True)
        with trio.open_signal_receiver(15, 2) as signals:
            async for _ in signals:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["good", "exit-now", "exit-random", "hang-after-accept",
                                         "hang-silent", "liar", "forgetful", "refuse", "busy",
                                         "oversize", "garbage", "bad-cid", *FAST_ERRORS])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--trust", action="append", default=[])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.3)
    trio.run(main, parser.parse_args())
    sys.exit(0)
