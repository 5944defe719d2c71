"""Word count: p2pmr on a local swarm against a single-process baseline.

Builds a corpus of --size-mib from the bundled Gutenberg texts, then in one
run times, as whole processes:

* the baseline: one Python process, one ``collections.Counter``, line by
  line, with the same tokenizer as examples/wordcount.py;
* ``p2pmr run examples/wordcount.py --input CORPUS --local-peers N``.

It checks that the counts are equal and prints wall times, MB/s, the ratio
p2pmr/baseline, the peers' peak RSS, and where p2pmr's time went (start-up,
the phases, and the per-task profile the peers report).

    python scripts/bench_wordcount.py --size-mib 64 --peers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
GUTENBERG = ROOT / "examples" / "data" / "gutenberg"

BASELINE = r"""
import json, re, sys
from collections import Counter
word = re.compile(r"[^\W\d_]+")
counts = Counter()
with open(sys.argv[1], encoding="utf-8", errors="replace", newline="") as f:
    for line in f:
        counts.update(word.findall(line))
json.dump(counts, open(sys.argv[2], "w"))
"""


def build_corpus(path: Path, size: int) -> None:
    texts = b"".join(p.read_bytes() for p in sorted(GUTENBERG.glob("pg-*.txt")))
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = texts[: size - written]
            out.write(piece)
            written += len(piece)


class RSSMonitor:
    """Peak resident memory and CPU time of each process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    try:
                        rss = proc.memory_info().rss
                        cmd = " ".join(proc.cmdline()[1:5])
                        times = proc.cpu_times()
                        self.cpu[proc.pid] = times.user + times.system
                    except psutil.Error:
                        continue
                    old = self.peaks.get(proc.pid, ("", 0))[1]
                    if rss > old:
                        self.peaks[proc.pid] = (cmd, rss)
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_baseline(corpus: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BASELINE, str(corpus), str(out)], check=True)
    return time.perf_counter() - start


def run_p2pmr(corpus: Path, work: Path, peers: int, reducers: int,
              workers: int | None) -> tuple[float, Path, Path, RSSMonitor]:
    repo, output = work / "repo", work / "out"
    cmd = [sys.executable, "-m", "p2pmr", "run", str(ROOT / "examples" / "wordcount.py"),
           "--input", str(corpus), "--reducers", str(reducers), "--local-peers", str(peers),
           "--repo", str(repo), "--output", str(output), "--no-progress"]
    if workers:
        cmd += ["--local-workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    monitor = RSSMonitor(proc.pid)
    _, stderr = proc.communicate()
    elapsed = time.perf_counter() - start
    monitor.stop()
    if proc.returncode != 0:
        raise SystemExit(f"p2pmr run failed:\n{stderr.decode()}")
    job_dirs = list((repo / "jobs").iterdir())
    report = next(d / "report.json" for d in job_dirs if (d / "report.json").exists())
    return elapsed, output, report, monitor


def read_counts(output: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in sorted(output.glob("part-*")):
        for line in part.read_text(encoding="utf-8").splitlines():
            word, count = line.rsplit("\t", 1)
            counts[word] = int(count)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--reducers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="workers per peer")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    args = parser.parse_args()

    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="p2pmr-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.txt"
        build_corpus(corpus, size)
        base_times, p2p_times = [], []
        monitor: RSSMonitor | None = None
        report: dict[str, object] = {}
        for i in range(args.repeat):
            base_out = work / "baseline.json"
            base_times.append(run_baseline(corpus, base_out))
            run_dir = work / f"run{i}"
            run_dir.mkdir()
            elapsed, output, report_path, monitor = run_p2pmr(corpus, run_dir, args.peers,
                                                              args.reducers, args.workers)
            p2p_times.append(elapsed)
            expected = Counter(json.loads(base_out.read_text()))
            got = read_counts(output)
            if got != dict(expected):
                raise SystemExit(f"run {i}: counts differ from the baseline "
                                 f"({len(got)} vs {len(expected)} words)")
            report = json.loads(report_path.read_text())
        base, p2p = statistics.median(base_times), statistics.median(p2p_times)
        mb = size / 1e6
        print(f"corpus: {args.size_mib} MiB, {args.peers} local peer(s), "
              f"{args.reducers} reducer(s), {args.repeat} run(s) each (medians); counts equal")
        print(f"  baseline (1 process, Counter)   {base:7.2f} s   {mb / base:7.1f} MB/s   "
              f"runs: {', '.join(f'{t:.2f}' for t in base_times)}")
        print(f"  p2pmr run --local-peers {args.peers}        {p2p:7.2f} s   {mb / p2p:7.1f} MB/s"
              f"   runs: {', '.join(f'{t:.2f}' for t in p2p_times)}")
        print(f"  ratio p2pmr / baseline          {p2p / base:7.2f}   (target <= 0.80)")
        timings = report.get("timings", {})
        assert isinstance(timings, dict)
        total = float(timings.get("total", 0.0))
        print("where p2pmr's time went (last run):")
        print(f"  start-up (processes, imports, input add, peers)  "
              f"{p2p_times[-1] - total:6.2f} s")
        for phase in ("plan", "map", "reduce", "assemble"):
            print(f"  {phase:<8} {float(timings.get(phase, 0.0)):6.2f} s")
        traffic = report.get("traffic", {})
        assert isinstance(traffic, dict)
        print(f"  master's traffic: Bitswap blocks out {traffic.get('blocks_out', 0)} B, in "
              f"{traffic.get('blocks_in', 0)} B; protocol frames out "
              f"{traffic.get('protocol_out', 0)} B, in {traffic.get('protocol_in', 0)} B")
        profile = report.get("task_profile", {})
        assert isinstance(profile, dict)
        for phase, sums in profile.items():
            tasks = max(1.0, sums["tasks"])
            overhead = sums["wall"] - sums["compute"]
            print(f"  {phase} tasks: {int(sums['tasks'])}, summed wall {sums['wall']:.2f} s = "
                  f"user code and encoding {sums['compute']:.2f} s + fetch {sums['fetch']:.2f} s"
                  f" + queue {sums['queue']:.2f} s + store {sums['store']:.2f} s + rest; "
                  f"overhead per task {1000 * overhead / tasks:.1f} ms")
        assert monitor is not None
        print("processes of the last run: peak RSS (MiB), CPU seconds (last sample)")
        for pid, (cmd, rss) in sorted(monitor.peaks.items(), key=lambda kv: -kv[1][1])[:10]:
            kind = "worker" if "spawn_main" in cmd else ("peer" if " peer " in f" {cmd} "
                                                          else "master" if " run " in f" {cmd} "
                                                          else cmd[:40])
            print(f"  {rss / 2**20:7.1f} MiB  {monitor.cpu.get(pid, 0.0):6.2f} s  {kind}")


if __name__ == "__main__":
    main()
