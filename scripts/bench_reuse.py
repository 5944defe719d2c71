"""Content-addressed reuse, measured: what a job run again, or run on input
that grew, costs against its first run, in the same run of this script.

Every case runs ``p2pmr run examples/wordcount.py --local-peers N`` as a
whole process (start-up included), and reads the run's report for the
tasks it ran, took from the memo and the leaf blocks its map tasks read:

* ``rerun``: one file of ``--size-mib`` MiB; the same job run again in the
  same repo. Target: 0 tasks run, the same output CID, wall at most 0.25x
  the first run.
* ``ninth file``: the same bytes as a directory of 8 files; a 9th, small
  file is added and the job run again. Target: the output CID of a fresh
  run (``--fresh``, in a repo of its own) of the grown directory, wall at
  most 0.4x the first run.
* ``verify``: ``p2pmr verify --all`` and ``--sample 5%`` of the first
  run's output. Targets: at most 1.2x and 0.15x the first run.
* ``buzhash insert``: the file added with ``--chunker buzhash``, then
  1 KiB inserted at its middle. Target: at most 3 blocks mapped again.
* ``grown file``: the file of ``rerun`` grows by 1%. Target: at most 3% of
  its leaf blocks mapped again, and the fresh run's output CID. Run once per
  ``--split-sizes`` value, since the run that holds the file's old end is
  mapped again whole, and its size is the split size's.

Ratios are to first runs measured in the same invocation, so they hold on
a machine whose speed is not known. The last line is the JSON of it all.

    .venv/bin/python scripts/bench_reuse.py --size-mib 64
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _benchutil import loadavg, wait_quiet
from bench_dataplane import MIB, ROOT, add_corpus_options, build_corpus, corpus_texts

JOB = ROOT / "examples" / "wordcount.py"


@dataclass
class Run:
    """One ``p2pmr run``, as its report tells it."""

    output: str
    wall: float
    executed: int
    reused: int
    blocks_mapped: int


@dataclass
class Settings:
    peers: int
    reducers: int
    timeout: float
    quiet_wait: float


def run_job(data: Path | str, repo: Path, s: Settings, *extra: str) -> Run:
    wait_quiet(s.quiet_wait)
    command = [sys.executable, "-m", "p2pmr", "run", str(JOB), "--input", str(data),
               "--reducers", str(s.reducers), "--local-peers", str(s.peers),
               "--repo", str(repo), "--no-progress", *extra]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, timeout=s.timeout)
    wall = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n"
                         f"{result.stderr.decode(errors='replace')[-4000:]}")
    output = result.stdout.decode().split()[-1]
    reports = sorted((repo / "jobs").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    tasks = json.loads(reports[-1].read_text())["tasks"]
    return Run(output, wall, tasks["executed"], tasks["reused"], tasks["blocks_mapped"])


def verify(output: str, repo: Path, s: Settings, *extra: str) -> dict[str, Any]:
    """``p2pmr verify`` of an output: its verdict, and its wall time."""
    wait_quiet(s.quiet_wait)
    command = [sys.executable, "-m", "p2pmr", "verify", output, "--repo", str(repo),
               "--local-peers", str(s.peers), "--json", *extra]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, timeout=s.timeout)
    wall = time.monotonic() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n"
                         f"{result.stderr.decode(errors='replace')[-4000:]}")
    verdict: dict[str, Any] = json.loads(result.stdout)
    return {"wall": wall, "ok": verdict["ok"], "checked": verdict["checked"],
            "tasks": verdict["tasks"]}


def split_into_files(corpus: Path, directory: Path, count: int) -> Path:
    """The corpus's bytes as ``count`` files of about equal size, cut after
    whole lines, so the directory's words are the file's."""
    directory.mkdir(parents=True)
    body = corpus.read_bytes()
    start = 0
    for i in range(count):
        end = len(body) if i == count - 1 else body.rfind(b"\n", start,
                                                          len(body) * (i + 1) // count) + 1
        (directory / f"part-{i:02d}.txt").write_bytes(body[start:end])
        start = end
    return directory


def grow(path: Path, share: float) -> None:
    """Append the file's own first ``share`` of bytes, cut after a whole line."""
    body = path.read_bytes()
    piece = body[: int(len(body) * share)]
    with open(path, "ab") as f:
        f.write(piece[: piece.rfind(b"\n") + 1])


def rerun_and_verify(corpus: Path, work: Path, s: Settings) -> dict[str, object]:
    report: dict[str, object] = {}
    one = work / "one"
    one.mkdir()
    shutil.copy(corpus, one / "input.txt")
    first = run_job(one, work / "repo-one", s)
    again = run_job(one, work / "repo-one", s)
    report["rerun"] = {"first": asdict(first), "again": asdict(again),
                       "ratio": again.wall / first.wall,
                       "same_output": again.output == first.output}
    print(f"| rerun | {first.wall:.2f} | {again.wall:.2f} | {again.wall / first.wall:.2f} "
          f"(target 0.25) | {again.executed} run, {again.reused} reused | "
          f"{'same CID' if again.output == first.output else 'DIFFERENT CID'} |", flush=True)
    for how in (("--all",), ("--sample", "5%")):
        checked = verify(first.output, work / "repo-one", s, *how)
        report[f"verify {' '.join(how)}"] = {**checked, "ratio": checked["wall"] / first.wall}
        print(f"| verify {' '.join(how)} | {first.wall:.2f} | {checked['wall']:.2f} | "
              f"{checked['wall'] / first.wall:.2f} (target "
              f"{'1.2' if how[0] == '--all' else '0.15'}) | {checked['checked']} of "
              f"{checked['tasks']} tasks run | {'ok' if checked['ok'] else 'FAILED'} |",
              flush=True)
    return report


def ninth_file(corpus: Path, work: Path, s: Settings) -> dict[str, object]:
    eight = split_into_files(corpus, work / "eight", 8)
    first = run_job(eight, work / "repo-eight", s)
    (eight / "part-99.txt").write_bytes(corpus.read_bytes()[:100_000].rsplit(b"\n", 1)[0]
                                        + b"\n")
    ninth = run_job(eight, work / "repo-eight", s)
    fresh = run_job(eight, work / "repo-eight-fresh", s, "--fresh")
    print(f"| ninth file | {first.wall:.2f} | {ninth.wall:.2f} | "
          f"{ninth.wall / first.wall:.2f} (target 0.4) | {ninth.executed} run, "
          f"{ninth.reused} reused | {'exact' if ninth.output == fresh.output else 'FAILED'} |",
          flush=True)
    return {"first": asdict(first), "grown": asdict(ninth), "fresh": asdict(fresh),
            "ratio": ninth.wall / first.wall, "exact": ninth.output == fresh.output}


def grown_file(corpus: Path, work: Path, s: Settings, split_sizes: list[str]
               ) -> dict[str, object]:
    runs: dict[str, object] = {}
    for size in split_sizes:
        data = work / f"grown-{size}"
        data.mkdir()
        shutil.copy(corpus, data / "input.txt")
        repo = work / f"repo-grown-{size}"
        before = run_job(data, repo, s, "--split-size", size)
        grow(data / "input.txt", 0.01)
        after = run_job(data, repo, s, "--split-size", size)
        fresh = run_job(data, work / f"repo-grown-{size}-fresh", s, "--split-size", size)
        share = after.blocks_mapped / fresh.blocks_mapped
        runs[size] = {"first": asdict(before), "grown": asdict(after), "fresh": asdict(fresh),
                      "blocks_share": share, "exact": after.output == fresh.output}
        print(f"| grown file, split {size} MiB | {before.wall:.2f} | {after.wall:.2f} | "
              f"{after.wall / before.wall:.2f} | {after.blocks_mapped} of "
              f"{fresh.blocks_mapped} blocks mapped again = {share:.1%} (target 3%) | "
              f"{'exact' if after.output == fresh.output else 'FAILED'} |", flush=True)
    return runs


CASES = ("rerun", "ninth", "grown", "buzhash")


def cases(corpus: Path, work: Path, s: Settings, split_sizes: list[str],
          chosen: Sequence[str] = CASES) -> dict[str, object]:
    report: dict[str, object] = {}
    if "rerun" in chosen:
        report.update(rerun_and_verify(corpus, work, s))
    if "ninth" in chosen:
        report["ninth_file"] = ninth_file(corpus, work, s)
    if "grown" in chosen:
        report["grown_file"] = grown_file(corpus, work, s, split_sizes)
    if "buzhash" in chosen:
        report["buzhash_insert"] = buzhash_insert(corpus, work, s, split_sizes)
    return report


def add(path: Path, repo: Path, *extra: str) -> tuple[str, float]:
    """``p2pmr add`` a file: its CID, and the seconds it took."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "p2pmr", "add", str(path), "--repo",
                             str(repo), *extra], capture_output=True, check=True)
    return result.stdout.decode().split()[-1], time.monotonic() - start


def buzhash_insert(corpus: Path, work: Path, s: Settings, split_sizes: list[str]
                   ) -> dict[str, object]:
    """The file added with ``--chunker buzhash``, then 1 KiB inserted at its
    middle (after a line): how many of its blocks are mapped again."""
    body = corpus.read_bytes()
    middle = body.rfind(b"\n", 0, len(body) // 2) + 1
    edited = work / "buzhash-edited.txt"
    edited.write_bytes(body[:middle] + b"inserted words " * 68 + b"\n" + body[middle:])
    out: dict[str, object] = {}
    for size in split_sizes:
        repo = work / f"repo-buzhash-{size}"
        first_cid, add_s = add(corpus, repo, "--chunker", "buzhash")
        first = run_job(first_cid, repo, s, "--split-size", size)
        edited_cid, _ = add(edited, repo, "--chunker", "buzhash")
        again = run_job(edited_cid, repo, s, "--split-size", size)
        fresh_repo = work / f"repo-buzhash-{size}-fresh"
        add(edited, fresh_repo, "--chunker", "buzhash")
        fresh = run_job(edited_cid, fresh_repo, s, "--split-size", size)
        out[size] = {"add_seconds": add_s, "first": asdict(first), "edited": asdict(again),
                     "fresh": asdict(fresh), "exact": again.output == fresh.output}
        print(f"| buzhash file + 1 KiB mid-file, split {size} MiB | {first.wall:.2f} | "
              f"{again.wall:.2f} | {again.wall / first.wall:.2f} | {again.blocks_mapped} of "
              f"{fresh.blocks_mapped} blocks mapped again (target 3) | "
              f"{'exact' if again.output == fresh.output else 'FAILED'} |", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64, help="input size")
    parser.add_argument("--split-sizes", default="4,1,0",
                        help="--split-size values (MiB; 0: a block per task) for the "
                             "grown-file case")
    add_corpus_options(parser)
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"which cases to run: {', '.join(CASES)}")
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--reducers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--quiet-wait", type=float, default=5.0,
                        help="seconds to wait for a quiet machine before each run")
    args = parser.parse_args()
    corpus = build_corpus(corpus_texts(args), args.size_mib * MIB, args.cache)
    s = Settings(args.peers, args.reducers, args.timeout, args.quiet_wait)
    print(f"# reuse: {args.size_mib} MiB word count, {args.peers} local peers, "
          f"{args.reducers} reducers; load average {loadavg()}\n")
    print("| case | first run s | again s | ratio | tasks / blocks | check |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory(prefix="p2pmr-reuse-") as tmp:
        report = cases(corpus, Path(tmp), s,
                       [x.strip() for x in args.split_sizes.split(",") if x.strip()],
                       [x.strip() for x in args.cases.split(",") if x.strip()])
    print(json.dumps({"size_mib": args.size_mib, **report}))


if __name__ == "__main__":
    main()
