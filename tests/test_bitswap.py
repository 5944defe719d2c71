"""Block exchange between real peers over Bitswap on 127.0.0.1."""

from __future__ import annotations

import hashlib

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.bitswap.messages import create_message, create_wantlist_entry
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from p2pmr.errors import BlockNotFound
from p2pmr.node import open_node
from p2pmr.storage.cid import CID, RAW
from p2pmr.storage.flatfs import FlatFSStore
from p2pmr.storage.unixfs import file_segments, read_range
from p2pmr.storage.varint import encode_uvarint

from .helpers import PeerProcess, random_bytes, run_cli


def test_two_processes_exchange_20_mib(tmp_path) -> None:
    data = random_bytes(20 * 1024 * 1024, seed=7)
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    repo_a, repo_b = tmp_path / "a", tmp_path / "b"
    cid = run_cli("add", str(src), "--repo", str(repo_a)).stdout.decode().split()[-1]
    with PeerProcess(repo_a) as peer:
        out = run_cli("cat", cid, "--repo", str(repo_b), "--bootstrap", peer.addr,
                      "--timeout", "30", timeout=180).stdout
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    # The fetching process kept what it fetched: the file now reads offline.
    again = run_cli("cat", cid, "--repo", str(repo_b)).stdout
    assert again == data


def test_corrupted_block_is_rejected_and_not_stored(tmp_path) -> None:
    data = random_bytes(3 * 262144, seed=3)
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    repo_a, repo_b = tmp_path / "a", tmp_path / "b"
    root = CID.parse(run_cli("add", str(src), "--repo", str(repo_a)).stdout.decode().split()[-1])
    store_a = FlatFSStore(repo_a)
    leaf = trio.run(file_segments, store_a, root)[1].cid
    path = store_a.path_of(leaf)
    block = bytearray(path.read_bytes())
    block[100] ^= 0xFF  # the serving peer's disk is corrupted
    path.write_bytes(bytes(block))
    with PeerProcess(repo_a) as peer:
        result = run_cli("block", "get", str(leaf), "--repo", str(repo_b), "--bootstrap",
                         peer.addr, "--timeout", "4", check=False)
    assert result.returncode == 1
    assert b"not found" in result.stderr
    assert not FlatFSStore(repo_b).has_sync(leaf)


async def test_missing_block_times_out_with_clear_error(tmp_path) -> None:
    async with open_node(tmp_path / "a") as a, open_node(
            tmp_path / "b", bootstrap=[a.multiaddrs[0]]) as b:
        ghost = CID.hash(b"nobody has this", version=1, codec=RAW)
        with trio.fail_after(10):
            with pytest.raises(BlockNotFound, match="said they do not have it"):
                await b.blocks.get(ghost, timeout=2)


async def test_unsolicited_and_forged_blocks_are_dropped(tmp_path) -> None:
    """A peer pushing blocks we did not want, or wrong bytes for one we did."""
    async with open_node(tmp_path / "victim") as victim:
        assert victim.bitswap is not None
        wanted = CID.hash(b"the real block", version=1, codec=RAW)
        fetch_result: list[object] = []

        async def fetch() -> None:
            try:
                fetch_result.append(await victim.blocks.get(wanted, timeout=3))
            except BlockNotFound as exc:
                fetch_result.append(exc)

        attacker = new_host(key_pair=create_new_key_pair())
        async with attacker.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await attacker.connect(info_from_p2p_addr(multiaddr.Multiaddr(victim.multiaddrs[0])))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                await trio.sleep(0.3)
                stream = await attacker.new_stream(victim.peer_id,
                                                   [TProtocol("/ipfs/bitswap/1.2.0")])
                junk = b"an unsolicited block"
                forged = b"not the real block"
                msg = create_message(blocks_v110=[(wanted.prefix, forged),
                                                  (wanted.prefix, junk)])
                payload = msg.SerializeToString()
                await stream.write(encode_uvarint(len(payload)) + payload)
                await trio.sleep(0.5)
                await stream.close()
        assert isinstance(fetch_result[0], BlockNotFound)
        assert victim.bitswap.stats.unwanted_blocks == 2
        assert not await victim.blocks.has(wanted)
        assert not await victim.blocks.has(CID.hash(junk, version=1, codec=RAW))


async def test_stock_peer_can_fetch_via_wantlist(tmp_path) -> None:
    """A stock py-libp2p client sends a wantlist; the reply comes on a stream we open."""
    async with open_node(tmp_path / "server") as server:
        data = random_bytes(5000)
        root = await server.add_bytes(data)
        client = new_host(key_pair=create_new_key_pair())
        received: list[bytes] = []
        got = trio.Event()

        async def handler(stream: object) -> None:
            from libp2p.bitswap.pb.bitswap_pb2 import Message

            buf = b""
            while True:
                try:
                    chunk = await stream.read(65536)  # type: ignore[attr-defined]
                except Exception:
                    break
                if not chunk:
                    break
                buf += chunk
                from p2pmr.storage.varint import decode_uvarint

                length, pos = decode_uvarint(buf)
                if len(buf) - pos >= length:
                    msg = Message()
                    msg.ParseFromString(buf[pos:pos + length])
                    for block in msg.payload:
                        received.append(bytes(block.prefix))
                        received.append(bytes(block.data))
                    got.set()
                    break

        for proto in ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0"):
            client.set_stream_handler(TProtocol(proto), handler)
        async with client.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await client.connect(info_from_p2p_addr(multiaddr.Multiaddr(server.multiaddrs[0])))
            stream = await client.new_stream(server.peer_id, [TProtocol("/ipfs/bitswap/1.2.0")])
            msg = create_message(wantlist_entries=[create_wantlist_entry(bytes(root))])
            payload = msg.SerializeToString()
            await stream.write(encode_uvarint(len(payload)) + payload)
            with trio.fail_after(10):
                await got.wait()
        # CIDv0 block: the prefix must be 00 70 12 20, never empty.
        assert received[0] == bytes.fromhex("00701220")
        assert CID.hash(received[1]) == root
        assert await read_range(server.blocks, root) == data


async def test_garbage_on_our_own_stream_cannot_take_the_node_down(tmp_path) -> None:
    """A peer answering our want, on the stream we opened, with a block whose
    prefix names a hash we do not support (blake3): the stream goes, the
    node stays, and it still serves and fetches afterwards."""
    async with open_node(tmp_path / "victim") as victim, \
            open_node(tmp_path / "honest", bootstrap=[victim.multiaddrs[0]]) as honest:
        assert victim.bitswap is not None
        wanted = CID.hash(b"the real block", version=1, codec=RAW)
        attacker = new_host(key_pair=create_new_key_pair())
        answered = trio.Event()

        async def reply_with_garbage(stream: object) -> None:
            msg = create_message(blocks_v110=[(bytes.fromhex("01551e20"), b"the real block")])
            payload = msg.SerializeToString()
            await stream.write(encode_uvarint(len(payload)) + payload)  # type: ignore[attr-defined]
            answered.set()
            await trio.sleep(1)

        for proto in ("/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0"):
            attacker.set_stream_handler(TProtocol(proto), reply_with_garbage)
        async with attacker.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await victim.connect(f"{attacker.get_addrs()[0]}")
            with trio.fail_after(15), pytest.raises(BlockNotFound):
                await victim.blocks.get(wanted, timeout=2)
            assert answered.is_set()
        # The node survived: it still fetches from an honest peer.
        data = random_bytes(300_000, seed=3)
        root = await honest.add_bytes(data)
        with trio.fail_after(20):
            assert await read_range(victim.blocks, root) == data
