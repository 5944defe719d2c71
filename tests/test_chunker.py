"""Content-defined leaves (``--chunker buzhash``): bytes round-trip, cuts
stay within Kubo's bounds and follow the content, so an insertion changes
only the leaves around it; and a job over such a file is exact."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pmr.storage.chunker import BUZ_MAX, BUZ_MIN
from p2pmr.storage.unixfs import ImportOptions, add_stream, file_segments, import_bytes, read_range

from .helpers import GUTENBERG, ROOT, run_cli
from .swarm import reference_counts

BUZHASH = ImportOptions(chunker="buzhash")
TEXTS = sorted(GUTENBERG.glob("pg-*.txt"))


class _Blocks:
    """A dict of blocks as a block store, for reading an import back."""

    def __init__(self, blocks: list[tuple[object, bytes]]) -> None:
        self.blocks = dict(blocks)

    async def get(self, cid: object, *, timeout: float | None = None) -> bytes:
        return self.blocks[cid]

    async def put(self, cid: object, block: bytes) -> None:
        self.blocks[cid] = block


def _reader(data: bytes, seed: int) -> Callable[[int], Awaitable[bytes]]:
    """An async ``read(n)`` that returns short pieces, as pipes do."""
    rng, view, at = random.Random(seed), memoryview(data), 0

    async def read(n: int) -> bytes:
        nonlocal at
        piece = bytes(view[at:at + min(n, rng.randint(1, 200_000))])
        at += len(piece)
        return piece

    return read


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 1_600_000), seed=st.integers(0, 2**32), text=st.booleans(),
       version=st.sampled_from([0, 1]))
def test_buzhash_round_trips_and_cuts_within_bounds(size: int, seed: int, text: bool,
                                                    version: int) -> None:
    rng = random.Random(seed)
    if text:  # real text, repeated: cuts that depend on content, not noise
        source = TEXTS[seed % len(TEXTS)].read_bytes()
        data = (source * (size // len(source) + 1))[:size]
    else:
        data = rng.randbytes(size)
    options = ImportOptions(chunker="buzhash", cid_version=version)
    root, blocks = import_bytes(data, options)

    async def check() -> None:
        store = _Blocks(blocks)
        assert await read_range(store, root) == data  # type: ignore[arg-type]
        leaves = [seg.size for seg in await file_segments(store, root)]  # type: ignore[arg-type]
        assert sum(leaves) == len(data)
        assert all(BUZ_MIN <= n <= BUZ_MAX for n in leaves[:-1])
        assert not leaves or leaves[-1] <= BUZ_MAX
        # Streamed in short reads, the same leaves and the same root.
        streamed, _ = await add_stream(_Blocks([]), _reader(data, seed), options)  # type: ignore[arg-type]
        assert streamed == root

    trio.run(check)


def _leaves(data: bytes, options: ImportOptions) -> tuple[str, list[tuple[str, int]]]:
    """(root CID, [(leaf CID, size)]) of an import."""
    root, blocks = import_bytes(data, options)

    async def go() -> list[tuple[str, int]]:
        segments = await file_segments(_Blocks(blocks), root)  # type: ignore[arg-type]
        return [(str(seg.cid), seg.size) for seg in segments]

    return str(root), trio.run(go)


def test_an_insertion_changes_only_the_leaves_around_it() -> None:
    """1 KiB inserted in the middle of 6 MiB of text: at most 3 leaves are
    new with buzhash; with fixed-size chunks every leaf after it is."""
    data = (b"".join(t.read_bytes() for t in TEXTS) * 2)[:6 << 20]
    middle = len(data) // 2
    edited = data[:middle] + random.Random(5).randbytes(1024) + data[middle:]
    for options in (BUZHASH, ImportOptions()):
        before = {cid for cid, _ in _leaves(data, options)[1]}
        after = _leaves(edited, options)[1]
        new = [cid for cid, _ in after if cid not in before]
        if options.chunker == "buzhash":
            assert 1 <= len(new) <= 3, (len(new), len(after))
        else:
            assert len(new) >= len(after) // 2 - 1


def test_buzhash_leaves_match_the_published_vector() -> None:
    """Cut points of a fixed input, cross-checked against go-ipfs-chunker's
    own buzhash (spec section 6.5): the lengths are in protocols/vectors."""
    vector = json.loads((ROOT / "protocols" / "vectors" / "buzhash.json").read_text())
    data = random.Random(2026).randbytes(2_500_000) + \
        (GUTENBERG / "pg-metamorphosis.txt").read_bytes() * 4
    root, leaves = _leaves(data, BUZHASH)
    assert [size for _, size in leaves] == vector["leaf_lengths"]
    assert root == vector["root_cidv0"]
    assert _leaves(data, ImportOptions(chunker="buzhash", cid_version=1))[0] == \
        vector["root_cidv1"]


def test_a_job_over_a_buzhash_file_is_exact(tmp_path: Path) -> None:
    """Variable-size leaves end lines anywhere: the word counts are exact."""
    book = tmp_path / "books.txt"
    book.write_bytes(b"".join(t.read_bytes() for t in TEXTS[:4]))
    repo = tmp_path / "repo"
    cid = run_cli("add", "--chunker", "buzhash", str(book), "--repo", str(repo)
                  ).stdout.decode().split()[-1]
    out = tmp_path / "out"
    run_cli("run", str(ROOT / "examples" / "wordcount.py"), "--input", cid, "--reducers", "2",
            "--local-peers", "2", "--split-size", "1", "--repo", str(repo), "--no-progress",
            "--output", str(out), timeout=180)
    got: dict[str, int] = {}
    for part in sorted(out.glob("part-*")):
        for line in part.read_text().splitlines():
            key, value = line.rsplit("\t", 1)
            got[key] = int(value)
    assert got == reference_counts([book])


def _blocks_mapped(repo: Path, cid: str, *extra: str, job: str = "wordcount.py"
                   ) -> tuple[str, int]:
    """(output CID, leaf blocks its map tasks read) of one run on ``cid``."""
    result = run_cli("run", str(ROOT / "examples" / job), "--input", cid, "--reducers", "2",
                     "--local-peers", "2", "--split-size", "0", "--repo", str(repo),
                     "--no-progress", *extra, timeout=240)
    job_cid = result.stderr.decode().split("job ", 1)[1].split()[0]
    report = json.loads((repo / "jobs" / job_cid / "report.json").read_text())
    return result.stdout.decode().split()[-1], report["tasks"]["blocks_mapped"]


def test_an_insertion_re_maps_only_its_blocks_for_a_job_without_record_keys(
        tmp_path: Path) -> None:
    """``RECORD_KEYS = False`` (examples/wordcount.py) and buzhash leaves: 1 KiB
    inserted mid-file maps at most 3 blocks again, and the output is a fresh
    run's. A job that sees (path, offset) keys maps every block after it."""
    body = (b"".join(t.read_bytes() for t in TEXTS) * 2)[:3 << 20]
    middle = body.rfind(b"\n", 0, len(body) // 2) + 1
    original, edited = tmp_path / "original.txt", tmp_path / "edited.txt"
    original.write_bytes(body)
    edited.write_bytes(body[:middle] + b"inserted words " * 68 + b"\n" + body[middle:])
    repo = tmp_path / "repo"
    add = ("add", "--chunker", "buzhash", "--repo", str(repo))
    first = run_cli(*add, str(original)).stdout.decode().split()[-1]
    second = run_cli(*add, str(edited)).stdout.decode().split()[-1]
    for job, most in (("wordcount.py", 3), ("wordcount_per_line.py", None)):
        _, total = _blocks_mapped(repo, first, job=job)
        out, again = _blocks_mapped(repo, second, job=job)
        assert out == _blocks_mapped(repo, second, "--fresh", job=job)[0]
        if most is not None:
            assert 1 <= again <= most, (again, total)
        else:
            assert again >= total // 3, (again, total)
