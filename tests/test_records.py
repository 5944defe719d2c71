"""Lines across block boundaries: every line exactly once, unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmr.master.plan import cut_runs
from p2pmr.records import SplitInfo, block_records, decode_line, iter_block_lines, stitch_file
from p2pmr.storage.cid import CID
from p2pmr.storage.unixfs import Segment


def reference_lines(data: bytes) -> list[tuple[int, str]]:
    """A sequential reference written independently of the engine."""
    out = []
    offset = 0
    pieces = data.split(b"\n")
    for i, piece in enumerate(pieces):
        terminated = i < len(pieces) - 1
        if not terminated and not piece:
            break
        text = piece[:-1] if terminated and piece.endswith(b"\r") else piece
        out.append((offset, text.decode("utf-8", "replace")))
        offset += len(piece) + 1
    return out


def engine_lines(data: bytes, cuts: list[int]) -> list[tuple[int, str]]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    blocks = [(bounds[i], data[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]
    if not data:
        blocks = []
    out: list[tuple[int, str]] = []
    splits = []
    for i, (offset, block) in enumerate(blocks):
        first, last = i == 0, i == len(blocks) - 1
        lines, edges = iter_block_lines(block, offset, first, last)
        mine = [(off, decode_line(raw, term)) for off, raw, term in lines]
        # The workers' fast path yields exactly the same records.
        fast, count, fast_edges = block_records("p", block, offset, first, last)
        assert [(o, t) for (_, o), t in fast] == mine and count == len(mine)
        assert fast_edges == edges
        out += mine
        head = block[:edges.head] if edges.head else b""
        tail = block[len(block) - edges.tail:] if edges.tail else b""
        splits.append(SplitInfo(offset, len(block), first, last, edges, head, tail))
    if splits:
        out += [(off, decode_line(raw, term)) for off, raw, term, _ in stitch_file(splits)]
        # Stitching any prefix yields exactly the lines that end inside it.
        whole = stitch_file(splits)
        step = max(1, len(splits) // 8)
        for n in range(0, len(splits), step):
            prefix = stitch_file(splits[:n], partial=True)
            assert prefix == [line for line in whole if line[3] < n]
    return sorted(out)


line_bytes = st.lists(st.sampled_from([b"a", b"b", b" ", b"\n", b"\r", b"\r\n", "é".encode(),
                                       b"\xff", b"\xe2\x82", b"\xac"]), max_size=200)


@settings(max_examples=500, deadline=None)
@given(pieces=line_bytes, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_cutting_gives_the_sequential_lines(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    assert engine_lines(data, cuts) == reference_lines(data)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=30),
       block=st.sampled_from([1, 2, 17, 256, 1000, 4096]), final_newline=st.booleans())
def test_lines_longer_than_blocks(lengths: list[int], block: int, final_newline: bool) -> None:
    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if final_newline else b"")
    cuts = list(range(block, len(data), block))
    assert engine_lines(data, cuts) == reference_lines(data)


def test_edge_cases() -> None:
    for data in (b"", b"\n", b"\n\n", b"abc", b"abc\n", b"a\r\nb\r\n", b"a\rb", b"\r\n",
                 b"no newline at all " * 50):
        for cut in range(len(data) + 1):
            assert engine_lines(data, [cut]) == reference_lines(data), (data, cut)


def test_crlf_split_between_cr_and_lf() -> None:
    data = b"first\r\nsecond\r\n"
    assert engine_lines(data, [6]) == [(0, "first"), (7, "second")]


def test_multibyte_character_across_boundary_is_not_mangled() -> None:
    data = "naïve café\n".encode()
    for cut in range(1, len(data)):
        assert engine_lines(data, [cut]) == [(0, "naïve café")]


def test_stitching_refuses_a_missing_fragment() -> None:
    """A fragment not yet read must never be taken as empty: that would
    shorten a line silently instead of failing loudly."""
    data = b"ab\n" + b"x" * 10 + b"\ncd\n"
    blocks = [(0, data[:5]), (5, data[5:10]), (10, data[10:])]
    splits = []
    for i, (offset, block) in enumerate(blocks):
        _, edges = iter_block_lines(block, offset, i == 0, i == len(blocks) - 1)
        head = block[:edges.head] if edges.head else b""
        tail = block[len(block) - edges.tail:] if edges.tail else b""
        splits.append(SplitInfo(offset, len(block), i == 0, i == len(blocks) - 1, edges,
                                head, tail))
    assert [raw for _, raw, _, _ in stitch_file(splits)] == [b"x" * 10]
    assert splits[1].edges is not None and splits[1].edges.no_newline
    for field in ("head", "tail"):
        for victim in range(3):
            broken = [SplitInfo(s.offset, s.size, s.first, s.last, s.edges, s.head, s.tail)
                      for s in splits]
            if not getattr(broken[victim], field):
                continue  # nothing to lose there
            setattr(broken[victim], field, None)
            with pytest.raises(ValueError, match=f"{field} fragment"):
                stitch_file(broken)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.sampled_from([1, 100, 1000, 262144]), max_size=120),
       target=st.sampled_from([0, 1, 5000, 1 << 20]))
def test_runs_cover_the_blocks_in_order_and_are_sized(sizes: list[int], target: int) -> None:
    segments, offset = [], 0
    for i, size in enumerate(sizes):
        segments.append(Segment(CID.hash(i.to_bytes(4, "big")), offset, size))
        offset += size
    runs = cut_runs(segments, target)
    assert [seg for run in runs for seg in run] == segments and all(runs)
    assert runs == cut_runs(list(segments), target)  # a function of the blocks alone
    for run in runs:
        held = sum(seg.size for seg in run)
        if target == 0:
            assert len(run) == 1
        else:  # never past twice the target but for its last block
            assert held - run[-1].size < 2 * target
    for run in runs[:-1]:
        assert sum(seg.size for seg in run) >= target // 2


def test_runs_average_the_target_and_resynchronise_after_an_edit() -> None:
    blocks = [Segment(CID.hash(i.to_bytes(4, "big")), i * 262144, 262144) for i in range(4000)]
    target = 4 << 20
    runs = cut_runs(blocks, target)
    mean = sum(sum(s.size for s in run) for run in runs) / len(runs)
    assert 0.8 * target < mean < 1.2 * target
    # A block inserted near the start moves only the cuts around it.
    edited = cut_runs([Segment(CID.hash(b"new"), 0, 262144), *blocks], target)
    tail = {tuple(s.cid for s in run) for run in runs[3:]}
    assert len(tail & {tuple(s.cid for s in run) for run in edited}) >= len(tail) - 2
