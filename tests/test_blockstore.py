"""The on-disk block store."""

from __future__ import annotations

import pytest

from p2pmr.errors import BlockNotFound, BlockVerificationError, StorageError
from p2pmr.storage import unixfs
from p2pmr.storage.base import fetch_dag
from p2pmr.storage.cid import CID, RAW
from p2pmr.storage.flatfs import FlatFSStore

from .helpers import random_bytes


async def test_put_get_has_and_kubo_layout(tmp_path) -> None:
    store = FlatFSStore(tmp_path)
    cid = CID.hash(b"hello", version=1, codec=RAW)
    assert not await store.has(cid)
    with pytest.raises(BlockNotFound):
        await store.get(cid)
    await store.put(cid, b"hello")
    assert await store.get(cid) == b"hello"
    # flatfs next-to-last/2: blocks/<XX>/<base32 multihash>.data
    path = store.path_of(cid)
    key = path.stem
    assert path.parent.name == key[-3:-1] and path.suffix == ".data"
    # Blocks are keyed by multihash, so the same bytes under another codec share it.
    assert await store.has(CID.hash(b"hello"))


async def test_put_verified_rejects_wrong_bytes(tmp_path) -> None:
    store = FlatFSStore(tmp_path)
    cid = CID.hash(b"right", version=1, codec=RAW)
    with pytest.raises(BlockVerificationError):
        await store.put_verified(cid, b"wrong")
    assert not await store.has(cid)


async def test_recursive_pin_requires_whole_dag(tmp_path) -> None:
    store = FlatFSStore(tmp_path)
    root = await unixfs.add_bytes(store, random_bytes(3 * 262144))
    await store.pin(root)
    assert store.pins() == {root: "recursive"}
    missing = await store.missing(root)
    assert missing == []
    leaf = next(c for c in [s.cid for s in await unixfs.file_segments(store, root)])
    await store.delete(leaf)
    assert await store.missing(root) == [leaf]
    await store.unpin(root)
    with pytest.raises(BlockNotFound):
        await store.pin(root)
    assert store.pins() == {}


async def test_verify_detects_corruption_on_disk(tmp_path) -> None:
    store = FlatFSStore(tmp_path)
    cid = CID.hash(b"data", version=1, codec=RAW)
    await store.put(cid, b"data")
    assert await store.verify(cid)
    store.path_of(cid).write_bytes(b"DATA")
    assert not await store.verify(cid)


async def test_dag_helpers_raise_their_own_errors_not_exception_groups(tmp_path) -> None:
    """fetch_dag and cat work in nurseries; a missing block or a link to a codec
    they cannot follow must still reach callers as the typed error they catch."""
    store = FlatFSStore(tmp_path)
    root = await unixfs.add_bytes(store, random_bytes(3 * 262144))
    leaf = (await unixfs.file_segments(store, root))[1].cid
    await store.delete(leaf)
    with pytest.raises(BlockNotFound):
        await fetch_dag(store, root)
    with pytest.raises(BlockNotFound):
        await unixfs.read_range(store, root)
    odd = CID.hash(b"{}", version=1, codec=0x71)  # dag-cbor: links not followed
    await store.put(odd, b"{}")
    with pytest.raises(StorageError):
        await fetch_dag(store, odd)
