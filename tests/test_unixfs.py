"""UnixFS: Kubo-identical CIDs, streaming import, and reading back."""

from __future__ import annotations

import io
import itertools
import random
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pmr.errors import BlockNotFound, UnixFSError
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID, RAW
from p2pmr.storage.dagpb import PBLink, decode_node, encode_node
from p2pmr.storage.flatfs import FlatFSStore
from p2pmr.storage.unixfs import ImportOptions, import_bytes

from .helpers import random_bytes

# Kubo's `ipfs add` results for random.Random(n).randbytes(n).
KUBO_DEFAULT = {
    0: "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    1: "QmcHFYKzbGeJYtDtcHEjgpKas4wZm8M25hjRusVLjou6Kx",
    1000: "QmY4GjLmSepnduArkf7RFMzoE7pj9LypVS5pbBEF9QAaVh",
    262144: "Qmbd9VNLTfpBW2arj1AkAJnVRYBq1WEY6Uu6wLEiemGipi",
    262145: "QmdkAszdeWKht9nXSzPKGUYvUqpMfm325GuCn1pZnTa9ja",
    1048576: "QmcZSDJuXeCkUq2BQyEwNZW5F4x5FxzQNUuav8XyceEBsS",
    10485760: "QmSZsKipkWN16qbdjLEo5EHECCtLEGj8TNNaJ17SfuF6SH",
    174 * 262144 + 1: "QmWvAUzQsaCFMPzTTFKwGmTmijHZ5aVRwJqGwrSHF89cuy",
}
KUBO_CIDV1 = {
    262145: "bafybeidbbs6ocod3v27jtr4uhvc6n55y3gbrtur3bvjsnraudtbxkozi2y",
    0: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
}


class MemoryStore:
    """A dict of blocks, for exercising UnixFS logic without disk or network."""

    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}
        self.gets = 0

    async def get(self, cid: CID, *, timeout: float | None = None) -> bytes:
        self.gets += 1
        try:
            return self.blocks[cid]
        except KeyError:
            raise BlockNotFound(cid) from None

    async def put(self, cid: CID, data: bytes) -> None:
        assert cid.verify(data)
        self.blocks[cid] = data


@pytest.mark.parametrize("n", sorted(KUBO_DEFAULT))
def test_default_import_matches_kubo(n: int) -> None:
    root, _ = import_bytes(random_bytes(n))
    assert str(root) == KUBO_DEFAULT[n]


@pytest.mark.parametrize("n", sorted(KUBO_CIDV1))
def test_cidv1_import_matches_kubo(n: int) -> None:
    root, _ = import_bytes(random_bytes(n), ImportOptions(cid_version=1))
    assert str(root) == KUBO_CIDV1[n]


@pytest.mark.parametrize("n,cid_version", [(0, 0), (1000, 0), (262145, 0), (262145, 1),
                                           (174 * 262144 + 1, 0)])
def test_streaming_importer_matches_kubo(n: int, cid_version: int) -> None:
    """Fed in pieces of any size, blocks handed out as made: Kubo's CIDs, and
    the very blocks import_bytes makes, children before parents."""
    data = random_bytes(n)
    made: list[tuple[CID, bytes]] = []
    importer = unixfs.StreamImporter(lambda cid, block: made.append((cid, block)),
                                     ImportOptions(cid_version=cid_version))
    rng = random.Random(n)
    pos = 0
    while pos < n:
        step = rng.choice([1, 100, 262143, 262144, 700_000])
        importer.write(data[pos:pos + step])
        pos += step
    root = importer.finish()
    expected = KUBO_DEFAULT if cid_version == 0 else KUBO_CIDV1
    assert str(root) == expected[n] and importer.size == n
    assert made == import_bytes(data, ImportOptions(cid_version=cid_version))[1]
    assert b"".join(unixfs.iter_file_sync(dict(made).__getitem__, root)) == data


def test_empty_file_block_is_kubo_literal() -> None:
    root, blocks = import_bytes(b"")
    assert blocks == [(root, bytes.fromhex("0a0408021800"))]


def test_well_known_small_cids() -> None:
    hello = import_bytes(b"hello world\n")[0]
    assert str(hello) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert str(unixfs.build_directory([])[0]) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_raw_leaves_with_cidv0_keeps_v0_root_and_v1_leaves() -> None:
    root, blocks = import_bytes(random_bytes(262145), ImportOptions(raw_leaves=True))
    assert root.version == 0
    leaves = [cid for cid, _ in blocks if cid != root]
    assert leaves and all(c.version == 1 and c.codec == RAW for c in leaves)


def test_two_level_dag_shape() -> None:
    """174 leaves fill one node; the 175th forces a root over two subtrees."""
    n = 174 * 262144 + 1
    root, blocks = import_bytes(random_bytes(n))
    node = decode_node(dict(blocks)[root])
    assert len(node.links) == 2
    first = decode_node(dict(blocks)[node.links[0].cid])
    second = decode_node(dict(blocks)[node.links[1].cid])
    assert len(first.links) == 174 and len(second.links) == 1
    # Tsize of an internal link = its block + its children's Tsizes.
    first_block = dict(blocks)[node.links[0].cid]
    assert node.links[0].tsize == len(first_block) + sum(lk.tsize or 0 for lk in first.links)
    # Leaf links carry the leaf block's length, and names are written as "".
    leaf_cid = first.links[0].cid
    assert first.links[0].tsize == len(dict(blocks)[leaf_cid])
    assert first.links[0].name == ""


def test_link_encoding_order_and_explicit_empty_name() -> None:
    cid = CID.hash(b"x")
    block = encode_node([PBLink(cid, "", 7)], b"\x08\x02")
    # Links (field 2, tag 0x12) come first; Name is written even though empty.
    assert block[0] == 0x12
    assert b"\x12\x00" in block
    assert block.endswith(b"\x0a\x02\x08\x02")


async def test_streaming_import_memory_is_flat(tmp_path) -> None:
    """Importing 64 MiB through add_stream holds a chunk, not the file."""

    class NullSink:
        async def put(self, cid: CID, data: bytes) -> None:
            pass

    size = 64 * 1024 * 1024
    source = io.BytesIO()
    produced = 0

    async def read(n: int) -> bytes:
        nonlocal produced
        if produced >= size:
            return b""
        chunk = min(n, size - produced, 65536)
        produced += chunk
        return b"\xab" * chunk

    tracemalloc.start()
    try:
        root, _ = await unixfs.add_stream(NullSink(), read)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert root.version == 0
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte import"
    del source


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 600_000), chunk=st.sampled_from([1, 7, 1000, 4096, 65536, 262144]),
       cid_version=st.sampled_from([0, 1]), raw=st.sampled_from([None, True, False]),
       max_links=st.sampled_from([2, 3, 174]), seed=st.integers(0, 2**32))
async def test_import_read_roundtrip(size: int, chunk: int, cid_version: int, raw: bool | None,
                                     max_links: int, seed: int) -> None:
    if chunk == 1 and size > 5000:
        size = 5000
    data = random.Random(seed).randbytes(size)
    store = MemoryStore()
    opts = ImportOptions(chunk_size=chunk, cid_version=cid_version, raw_leaves=raw,
                         max_links=max_links)
    root = await unixfs.add_bytes(store, data, opts)
    assert await unixfs.read_range(store, root) == data
    segments = await unixfs.file_segments(store, root)
    assert sum(s.size for s in segments) == size
    assert all(a.offset + a.size == b.offset for a, b in itertools.pairwise(segments))
    # Every segment is one leaf (one map split).
    assert all(s.size <= chunk for s in segments)
    # The exact reader (fetching every node) agrees with the Tsize shortcut.
    assert await unixfs.file_segments(store, root, trust_tsize=False) == segments
    if size:
        rng = random.Random(seed + 1)
        for _ in range(3):
            lo = rng.randrange(size)
            length = rng.randrange(size - lo + 1)
            assert await unixfs.read_range(store, root, lo, length) == data[lo:lo + length]


async def test_segments_skip_fetching_leaves() -> None:
    data = random_bytes(3 * 262144 + 10)
    store = MemoryStore()
    root = await unixfs.add_bytes(store, data)
    store.gets = 0
    segments = await unixfs.file_segments(store, root)
    assert len(segments) == 4
    assert store.gets == 1  # only the root: leaf Tsizes identify the leaves


async def test_reader_handles_mixed_leaf_sizes() -> None:
    """Leaves of different sizes, as a rabin or size-1048576 chunker makes."""
    store = MemoryStore()
    pieces = [random_bytes(n) for n in (1000, 1048576, 5, 70000)]
    children = []
    for piece in pieces:
        cid = await unixfs.add_bytes(store, piece, ImportOptions(chunk_size=1048576))
        children.append((cid, len(piece)))
    # Hand-build a parent over leaves of unequal size.
    data = unixfs._unixfs_internal_data(sum(n for _, n in children), [n for _, n in children])
    links = [PBLink(cid, "", len(store.blocks[cid])) for cid, _ in children]
    block = encode_node(links, data)
    root = CID.hash(block)
    await store.put(root, block)
    whole = b"".join(pieces)
    assert await unixfs.read_range(store, root) == whole
    segments = await unixfs.file_segments(store, root)
    assert [s.size for s in segments] == [1000, 1048576, 5, 70000]
    assert await unixfs.read_range(store, root, 900, 2000) == whole[900:2900]


async def test_reader_rejects_lying_blocksizes() -> None:
    store = MemoryStore()
    leaf = await unixfs.add_bytes(store, b"abc")
    data = unixfs._unixfs_internal_data(4, [4])  # claims 4 bytes, leaf has 3
    block = encode_node([PBLink(leaf, "", 999)], data)  # Tsize not a leaf's: must fetch
    root = CID.hash(block)
    await store.put(root, block)
    with pytest.raises(UnixFSError):
        await unixfs.file_segments(store, root)


async def test_directories_roundtrip(tmp_path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "sub" / "b.txt").write_bytes(random_bytes(300_000))
    (tree / ".hidden").write_bytes(b"secret")
    store = FlatFSStore(tmp_path / "repo")
    root = await unixfs.add_directory(store, tree)
    entries = await unixfs.list_directory(store, root, resolve_types=True)
    assert [(e.name, e.type) for e in entries] == [("a.txt", "file"), ("sub", "directory")]
    files = await unixfs.walk_files(store, root)
    assert [p for p, _ in files] == ["a.txt", "sub/b.txt"]
    assert await unixfs.read_range(store, files[1][1]) == random_bytes(300_000)
    # A directory's CID depends only on names and contents.
    again = await unixfs.add_directory(store, tree)
    assert again == root
    with pytest.raises(UnixFSError):
        await unixfs.file_segments(store, root)


def test_directory_names_are_validated() -> None:
    cid = CID.hash(b"")
    with pytest.raises(UnixFSError):
        unixfs.build_directory([("a/b", cid, 0)])
    with pytest.raises(UnixFSError):
        unixfs.build_directory([("x", cid, 0), ("x", cid, 0)])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_crashes_on_garbage(block: bytes) -> None:
    cid = CID.hash(block)
    try:
        unixfs.decode_unixfs(cid, block)
    except UnixFSError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decoder_survives_mutated_real_blocks(data: st.DataObject) -> None:
    _, blocks = import_bytes(random_bytes(3 * 262144 + 1, seed=1), ImportOptions(chunk_size=262144))
    _, block = blocks[-1]  # the root, with links
    mutated = bytearray(block)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    try:
        unixfs.decode_unixfs(CID.hash(bytes(mutated[:cut])), bytes(mutated[:cut]))
    except UnixFSError:
        pass
