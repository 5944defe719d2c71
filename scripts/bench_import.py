"""Benchmark the UnixFS importer (p2pmr.unixfs) against plain sha256.

What is measured
----------------
Throughput (one process, data generated once in memory, ``--size-mib`` MiB of
random bytes, default 256):

* ``sha256``: ``hashlib.sha256`` over the same bytes in 256 KiB chunks. This is
  the baseline every importer figure is divided by, so the ratios compare runs
  made on the same machine at the same moment.
* ``FileBuilder, null sink``: the synchronous importer core
  (:class:`p2pmr.unixfs.FileBuilder`) fed 256 KiB memoryview slices; every
  block is encoded and hashed, then dropped.
* ``add_stream, null sink``: the async streaming API that ``add_file`` and
  ``p2pmr add`` use, reading from memory, with a sink whose ``put`` does nothing.
* ``add_stream -> FlatFSStore``: the same into a real on-disk store in a fresh
  temporary directory (page cache; the store does not fsync).
* ``same, shard dirs exist``: the same into a store whose 1024 ``blocks/XX``
  directories already exist, as in a repo that is in use.

The cases run interleaved, one of each per round, ``--repeats`` rounds
(default 5); the summary reports the best (highest throughput) round, with
the median beside it. MB/s means 10**6 bytes per second. Each measurement
also records how much CPU the rest of the machine used meanwhile ("other CPU
%", from /proc/stat), so a noisy run can be recognised.

Peak memory: for each size in ``--memory-sizes-mib`` (default 64 and 1024) a
random file is written to ``--scratch`` and imported with ``add_file`` into a
null sink and into a FlatFSStore, each in a fresh child process. The child
reads ``VmHWM`` (and ``ru_maxrss``) after importing p2pmr (the idle baseline)
and again after the import; the difference is the import's peak RSS increase.
VmHWM is the figure to read: on Linux ``ru_maxrss`` of a freshly exec'd child
starts at its parent's high-water mark, which hides small increases. The input
files and stores are deleted afterwards.

``--profile`` adds a cProfile of the null-sink and FlatFSStore runs.

Run::

    python scripts/bench_import.py
    python scripts/bench_import.py --size-mib 64 --repeats 5 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from _benchutil import loadavg, system_busy_seconds, wait_quiet

from p2pmr.storage.cid import CID
from p2pmr.storage.flatfs import FlatFSStore
from p2pmr.storage.unixfs import FileBuilder, ImportOptions, add_file, add_stream

MIB = 1024 * 1024
HASH_CHUNK = 256 * 1024
TARGET_RATIO = 0.5


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class NullSink:
    """A block sink that keeps nothing: blocks are encoded and hashed, then dropped."""

    def __init__(self) -> None:
        self.blocks = 0
        self.bytes = 0

    async def put(self, cid: CID, data: bytes) -> None:
        self.blocks += 1
        self.bytes += len(data)


class MemoryReader:
    """An async ``read(n)`` over bytes in memory, as ``add_stream`` expects."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    async def read(self, n: int) -> bytes:
        piece = self.view[self.pos:self.pos + n]
        self.pos += len(piece)
        return bytes(piece)


@dataclass
class Result:
    name: str
    seconds: list[float]
    nbytes: int
    others: list[float] = field(default_factory=list)  # other processes' CPU, % of a core

    @property
    def best(self) -> float:
        return self.nbytes / min(self.seconds) / 1e6

    @property
    def median(self) -> float:
        return self.nbytes / statistics.median(self.seconds) / 1e6


# -- throughput -------------------------------------------------------------------


def run_sha256(data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), HASH_CHUNK):
        hashlib.sha256(view[start:start + HASH_CHUNK]).digest()


def run_builder(data: bytes, options: ImportOptions) -> CID:
    builder = FileBuilder(options)
    view = memoryview(data)
    size = options.chunk_size
    for start in range(0, len(view), size):
        builder.add_chunk(view[start:start + size])
    root, _ = builder.finish()
    return root


def run_stream_null(data: bytes, options: ImportOptions) -> CID:
    root, _ = trio.run(add_stream, NullSink(), MemoryReader(data).read, options)
    return root


def make_shard_dirs(store_dir: Path) -> None:
    """Create all 1024 ``blocks/XX`` shard directories, as a repo in use has them.

    A fresh store makes one per new shard while importing, and on ext4 those
    mkdirs are a large part of a 256 MiB (1024-block) import.
    """
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for a in alphabet:
        for b in alphabet:
            (store_dir / "blocks" / (a + b)).mkdir(parents=True, exist_ok=True)


def run_stream_flatfs(data: bytes, options: ImportOptions, store_dir: Path) -> CID:
    store = FlatFSStore(store_dir)
    root, _ = trio.run(add_stream, store, MemoryReader(data).read, options)
    return root


@dataclass
class Case:
    """One throughput measurement: ``setup`` (untimed) makes the argument of ``run``."""

    name: str
    run: Callable[[Any], object]
    setup: Callable[[], Any] = lambda: None


def measure_interleaved(cases: list[Case], nbytes: int, repeats: int,
                        after: Callable[[], None]) -> list[Result]:
    """Time every case once per round, round after round, so that drift in the
    machine's speed (other tenants, frequency, page-cache writeback) hits all of
    them alike instead of whichever happened to run last."""
    results = [Result(case.name, [], nbytes) for case in cases]
    for round_no in range(1, repeats + 1):
        cells = []
        others = []
        for case, result in zip(cases, results, strict=True):
            arg = case.setup()
            busy0, own0 = system_busy_seconds(), own_cpu_seconds()
            start = time.perf_counter()
            case.run(arg)
            seconds = time.perf_counter() - start
            other = (system_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
            after()
            result.seconds.append(seconds)
            result.others.append(max(0.0, other) / seconds * 100)
            cells.append(f"{nbytes / seconds / 1e6:8.1f}")
            others.append(f"{result.others[-1]:.0f}")
        print(f"  round {round_no}: " + " ".join(cells) + "  MB/s;  other CPU % "
              + "/".join(others), flush=True)
    return results


def profile(label: str, fn: Callable[[], object], top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile: {label} (sorted by tottime) ---")
    print("\n".join(line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith("   Ordered by")))


# -- peak memory ------------------------------------------------------------------


def read_status(field_name: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where unavailable)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_child(path: Path, sink_kind: str, store_dir: Path | None,
                 options: ImportOptions) -> None:
    """Runs in a fresh process: import ``path`` and print peak RSS as JSON."""
    before_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before_hwm = read_status("VmHWM")
    before_rss = read_status("VmRSS")
    sink: NullSink | FlatFSStore
    if sink_kind == "flatfs":
        assert store_dir is not None
        sink = FlatFSStore(store_dir)
    else:
        sink = NullSink()
    start = time.perf_counter()
    root = trio.run(add_file, sink, path, options)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "root": str(root),
        "seconds": seconds,
        "before_maxrss_kib": before_maxrss,
        "after_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "before_hwm_kib": before_hwm,
        "after_hwm_kib": read_status("VmHWM"),
        "before_rss_kib": before_rss,
    }))


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 8 * MIB)
            handle.write(os.urandom(n))
            left -= n


def run_memory_child(path: Path, sink_kind: str, scratch: Path,
                     args: argparse.Namespace) -> dict[str, Any]:
    store_dir = Path(tempfile.mkdtemp(prefix="mem-store-", dir=scratch))
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--child-memory", str(path),
               "--child-sink", sink_kind, "--child-store", str(store_dir),
               "--cid-version", str(args.cid_version)]
        if args.raw_leaves:
            cmd.append("--raw-leaves")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=256,
                        help="MiB of random data for the throughput runs (default 256)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="runs per throughput measurement; best and median reported")
    parser.add_argument("--memory-sizes-mib", default="64,1024",
                        help="comma-separated input sizes for the peak-memory runs "
                             "(default 64,1024; empty to skip)")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="directory for input files and stores (default: the system's"
                        " temporary directory)")
    parser.add_argument("--cid-version", type=int, choices=(0, 1), default=0)
    parser.add_argument("--raw-leaves", action="store_true", default=None,
                        help="raw leaves (default: iff CIDv1, as Kubo does)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile the null-sink and FlatFSStore imports")
    parser.add_argument("--profile-top", type=int, default=20)
    # Internal: the fresh process of one peak-memory measurement.
    parser.add_argument("--child-memory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-sink", choices=("null", "flatfs"), help=argparse.SUPPRESS)
    parser.add_argument("--child-store", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = ImportOptions(cid_version=args.cid_version, raw_leaves=args.raw_leaves)
    if args.child_memory is not None:
        memory_child(args.child_memory, args.child_sink or "null", args.child_store, options)
        return 0

    args.scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.scratch))
    try:
        return run(args, options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, options: ImportOptions, work: Path) -> int:
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {loadavg()}; "
          f"{args.size_mib} MiB random input, CIDv{options.cid_version}, "
          f"raw leaves {options.use_raw_leaves}, chunk {options.chunk_size}")
    # Memory first, while this process is still small (see print_summary).
    memory_rows = measure_memory(args, work)
    outcome = measure_throughput(args, options, work)
    if outcome is None:
        return 1
    sha, importers = outcome
    print_summary(args, sha, importers, memory_rows)
    print(f"load average at the end: {loadavg()}")
    return 0


def measure_throughput(args: argparse.Namespace, options: ImportOptions, work: Path
                       ) -> tuple[Result, list[Result]] | None:
    nbytes = args.size_mib * MIB
    data = os.urandom(nbytes)
    stores: list[Path] = []
    os.sync()
    waited = wait_quiet()
    print(f"\n(waited {waited:.1f}s for the machine to go quiet; load average {loadavg()})")

    def fresh_store(shards: bool = False) -> Path:
        path = Path(tempfile.mkdtemp(prefix="store-", dir=work))
        stores.append(path)
        if shards:
            make_shard_dirs(path)
        return path

    def drop_stores() -> None:
        if stores:
            while stores:
                shutil.rmtree(stores.pop(), ignore_errors=True)
            # Untimed: don't leave the next run to compete with this one's writeback.
            os.sync()

    # Every importer path must produce the same root.
    roots = {run_builder(data, options), run_stream_null(data, options),
             run_stream_flatfs(data, options, fresh_store())}
    drop_stores()
    if len(roots) != 1:
        print(f"ERROR: importer paths disagree on the root: {roots}")
        return None
    print(f"\n{args.size_mib} MiB imports to root {roots.pop()}")

    cases = [
        Case("sha256 (256 KiB chunks)", lambda _: run_sha256(data)),
        Case("FileBuilder, null sink", lambda _: run_builder(data, options)),
        Case("add_stream, null sink", lambda _: run_stream_null(data, options)),
        Case("add_stream -> FlatFSStore", lambda store: run_stream_flatfs(data, options, store),
             fresh_store),
        Case("  same, shard dirs exist", lambda store: run_stream_flatfs(data, options, store),
             lambda: fresh_store(shards=True)),
    ]
    print(f"Throughput, {args.repeats} interleaved rounds; columns: "
          + " | ".join(case.name.strip() for case in cases))
    sha, *importers = measure_interleaved(cases, nbytes, args.repeats, drop_stores)

    if args.profile:
        profile("add_stream, null sink", lambda: run_stream_null(data, options),
                args.profile_top)
        store = fresh_store()
        profile("add_stream -> FlatFSStore (main thread only)",
                lambda: run_stream_flatfs(data, options, store), args.profile_top)
        drop_stores()
    return sha, importers


def measure_memory(args: argparse.Namespace, work: Path
                   ) -> list[tuple[int, str, dict[str, Any]]]:
    rows: list[tuple[int, str, dict[str, Any]]] = []
    sizes = [int(s) for s in args.memory_sizes_mib.split(",") if s.strip()]
    if sizes:
        print("\nPeak memory of add_file from disk (fresh process per run):")
    for size_mib in sizes:
        path = work / f"input-{size_mib}mib.bin"
        write_random_file(path, size_mib * MIB)
        roots = set()
        try:
            for sink_kind in ("null", "flatfs"):
                row = run_memory_child(path, sink_kind, work, args)
                rows.append((size_mib, sink_kind, row))
                roots.add(row["root"])
                print(f"  {size_mib:>5} MiB -> {sink_kind:<6} "
                      f"VmHWM +{(row['after_hwm_kib'] - row['before_hwm_kib']) / 1024:.1f} MiB "
                      f"in {row['seconds']:.1f}s", flush=True)
        finally:
            path.unlink(missing_ok=True)
        if len(roots) != 1:
            print(f"  ERROR: the two sinks disagree on the root: {roots}")
    if sizes:
        os.sync()
    return rows


def print_summary(args: argparse.Namespace, sha: Result, importers: list[Result],
                  memory_rows: list[tuple[int, str, dict[str, Any]]]) -> None:
    print(f"\n=== Summary: UnixFS import of {args.size_mib} MiB "
          f"(best of {args.repeats}; median in brackets; MB = 10^6 bytes) ===")
    print(f"{'measurement':<28} {'MB/s':>9} {'(median)':>10} {'/ sha256':>9} "
          f"{'other CPU %':>12}")
    for res in [sha, *importers]:
        print(f"{res.name:<28} {res.best:>9.1f} {f'({res.median:.1f})':>10} "
              f"{res.best / sha.best:>9.2f} {statistics.median(res.others):>12.0f}")
    null_ratio = max(importers[0].best, importers[1].best) / sha.best
    stream_ratio = importers[1].best / sha.best
    print("(other CPU %: median CPU use of all other processes, kernel writeback included, "
          "while the\n measurement ran, in % of one core; the machine has "
          f"{os.cpu_count()}. High values mean a noisy run.)")
    verdict = "meets" if stream_ratio >= TARGET_RATIO else "BELOW"
    print(f"target: null-sink importer >= {TARGET_RATIO:.2f} x sha256; "
          f"add_stream null sink = {stream_ratio:.2f} ({verdict}), "
          f"best null-sink path = {null_ratio:.2f}")
    if memory_rows:
        baseline = memory_rows[0][2]
        print(f"\nPeak RSS of add_file (idle interpreter with p2pmr imported: "
              f"VmHWM {baseline['before_hwm_kib'] / 1024:.1f} MiB, "
              f"VmRSS {baseline['before_rss_kib'] / 1024:.1f} MiB)")
        print(f"{'input':>9} {'sink':<7} {'VmHWM idle':>11} {'VmHWM peak':>11} "
              f"{'increase':>9} {'maxrss incr':>12} {'MB/s':>7}")
        for size_mib, sink_kind, row in memory_rows:
            before = row["before_hwm_kib"] / 1024
            after = row["after_hwm_kib"] / 1024
            maxrss = (row["after_maxrss_kib"] - row["before_maxrss_kib"]) / 1024
            rate = size_mib * MIB / row["seconds"] / 1e6
            print(f"{size_mib:>5} MiB {sink_kind:<7} {before:>9.1f}Mi {after:>9.1f}Mi "
                  f"{after - before:>7.1f}Mi {maxrss:>10.1f}Mi {rate:>7.1f}")
        print("(VmHWM: the child's own peak RSS since exec. The ru_maxrss increase is also "
              "shown, but Linux\n carries the parent's RSS high-water mark across fork/exec "
              "into ru_maxrss, so it is a floor\n that hides small increases.)")

if __name__ == "__main__":
    sys.exit(main())
