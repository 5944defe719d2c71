"""The data plane against plain Python: one table, one run, ratios to a baseline.

Where does p2pmr's time, CPU, memory and traffic go compared with doing the
same work without it? Each row is a whole process tree, timed from start to
exit, on the same corpus, in the same run, so the ratios to the baseline
hold even on a machine whose speed is not known:

* ``baseline``: one Python process, one ``collections.Counter``, line by
  line: exactly the baseline of scripts/bench_wordcount.py (always run: the
  other rows are checked against its counts and divided by its time);
* ``pool``: ``multiprocessing.Pool(2)`` over splits of ``--split-kib`` KiB
  (the size of a p2pmr block), each split counting the lines that start in
  it, so lines crossing a split are counted once;
* ``dask``: ``dask.bag.read_text(...).str.split().flatten().frequencies()``
  with the processes scheduler and 2 workers (``pip install -e '.[bench]'``);
  it splits on whitespace, as Dask's idiom does, so its counts differ from
  the regular-expression words and are not compared;
* ``wordcount``: ``p2pmr run examples/wordcount.py --local-peers 2``
  (``map_batch`` and ``combine``);
* ``wordcount-per-line``: examples/wordcount_per_line.py, ``map`` per line
  and no combiner: one intermediate pair per word;
* ``linecount``: examples/linecount.py, each whole line counted, no
  combiner: the intermediate data is about as large as the input;
* ``hotkey``: examples/hotkey.py, one key for every line and no combiner:
  a single reduce streams one value per input line;
* ``sort``: examples/sort.py, when that file exists (checked for order only).

Columns, per row (the median of ``--repeat`` runs by wall time):

* wall seconds and the ratio to the baseline's median;
* CPU seconds (user + system) per role, polled every 0.1 s with psutil for
  every process of the tree: ``m`` the master (the p2pmr run process, or the
  one Python process of the other rows, with any helper it starts that is not
  a peer), ``p`` each peer process alone, ``w`` all task workers (of all
  peers; Pool and Dask workers for those rows); and ``total``, exact, from
  ``getrusage(RUSAGE_CHILDREN)`` of this script, which is a child subreaper
  so that even orphaned workers are reaped and counted;
* the master's traffic from its report.json (``traffic``: protocol frames in
  and out, Bitswap block bytes in and out) and its repo's size after the job;
* loopback bytes: each run is in a network namespace of its own
  (``unshare -n``, ``-rn`` when not root) whose only interface is ``lo``, so
  every byte it counts (``/proc/net/dev`` of that namespace, transmitted,
  equal to received) is TCP between the run's own processes; Pool and Dask
  talk over pipes, which it does not see (``n/a`` where namespaces are not
  permitted);
* peak RSS (VmHWM in /proc/PID/status, polled) per role: the largest master,
  peer and worker;
* the check: p2pmr's word counts must equal the baseline's Counter, its
  line counts a Counter of the input's lines, and the hot key's count and
  total the input's number of lines and their summed lengths, else the row
  says FAILED.

Input: the Project Gutenberg texts of ``--data`` (default the shared data
directory beside the repository, else the bundled examples/data/gutenberg),
concatenated and repeated to each size, ending on a whole line, and cached
per size in a temporary directory for later runs.

    python scripts/bench_dataplane.py                      # 64, 256 and 1024 MiB
    python scripts/bench_dataplane.py --sizes 8,16 --rows pool,wordcount --repeat 1

Development machines here are small and shared: the script waits (a little)
for a quiet moment before each run and prints the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _benchutil import loadavg, wait_quiet
from bench_wordcount import BASELINE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gutenberg"
BUNDLED_DATA = EXAMPLES / "data" / "gutenberg"
MIB = 1024 * 1024
WORD = re.compile(r"[^\W\d_]+")  # as examples/wordcount.py

P2PMR_JOBS = {"wordcount": "wordcount.py", "wordcount-per-line": "wordcount_per_line.py",
              "linecount": "linecount.py", "hotkey": "hotkey.py", "sort": "sort.py"}
ROWS = ("baseline", "pool", "dask", *P2PMR_JOBS)

# The wrapper run inside the new network namespace: bring up lo, note its
# counters, run the command, note them again. The namespace dies with its
# last process, so the counters must be read from inside, before that.
NETNS_WRAPPER = r"""
ip link set lo up || exit 97
cat /proc/net/dev > "$1"
after="$2"
shift 2
"$@"
rc=$?
cat /proc/net/dev > "$after"
exit $rc
"""


# --------------------------------------------------------------------------
# The rows that are not p2pmr, run as `bench_dataplane.py _inner MODE ...` so
# that they are whole process trees measured exactly like p2pmr's.

def _split_counts(task: tuple[str, int, int]) -> Counter[str]:
    """Count the words of the lines that start in [start, end).

    Seeking to one byte before the split and dropping through the next
    newline lands on the first line that starts at or after ``start``; the
    last line read is the one that starts before ``end``, wherever it ends.
    So each line is counted by exactly one split."""
    path, start, end = task
    counts: Counter[str] = Counter()
    findall = WORD.findall
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()
        pos = f.tell()
        pieces = []
        while pos < end:
            raw = f.readline()
            if not raw:
                break
            pieces.append(raw)
            pos += len(raw)
    text = b"".join(pieces).decode("utf-8", "replace")
    for line in text.splitlines():
        counts.update(findall(line))
    return counts


def _inner_pool(corpus: str, out: str, split: int) -> None:
    import multiprocessing

    size = os.path.getsize(corpus)
    tasks = [(corpus, s, min(s + split, size)) for s in range(0, size, split)]
    total: Counter[str] = Counter()
    with multiprocessing.Pool(2) as pool:
        for counts in pool.imap_unordered(_split_counts, tasks, chunksize=4):
            total.update(counts)
    with open(out, "w") as f:
        json.dump(total, f)


def _inner_dask(corpus: str, out: str, split: int) -> None:
    import dask.bag as db

    bag = db.read_text(corpus, blocksize=split, encoding="utf-8",  # type: ignore[no-untyped-call]
                       errors="replace")
    pairs = bag.str.split().flatten().frequencies().compute(scheduler="processes",
                                                             num_workers=2)
    with open(out, "w") as f:
        json.dump({"tokens": len(pairs)}, f)


def _inner(argv: Sequence[str]) -> None:
    mode, corpus, out, split = argv
    {"pool": _inner_pool, "dask": _inner_dask}[mode](corpus, out, int(split))


# --------------------------------------------------------------------------
# Measuring a process tree.

@dataclass
class ProcInfo:
    """What the poller last saw of one process."""

    proc: psutil.Process
    role: str          # master, peer, worker, wrapper
    peer: int | None   # the peer a worker belongs to
    command: str = ""
    cmdline: list[str] = field(default_factory=list)
    cpu: float = 0.0
    hwm: int = 0


def _hwm(pid: int) -> int:
    """Peak resident set (VmHWM) in bytes: the kernel keeps the maximum, so a
    poll only has to catch the process alive, not at its peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _started(proc: psutil.Process) -> float:
    try:
        return float(proc.create_time())
    except psutil.Error:
        return float("inf")


class TreeMonitor:
    """CPU time and peak RSS of every process under ``root``, every 0.1 s."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(root)
        self.interval = interval
        self.procs: dict[int, ProcInfo] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _classify(self, proc: psutil.Process) -> ProcInfo:
        """A process's role, from its command line and its place in the tree:
        the first process that is not the namespace wrapper is the master; a
        ``p2pmr peer`` is a peer; below a peer, a worker of that peer; any
        other process below a p2pmr master is its helper (counted with it),
        below another master (Pool, Dask) a worker."""
        info = self._role(proc)
        info.cmdline = proc.cmdline()
        text = " ".join(info.cmdline).replace("\n", " ")
        info.command = f"(parent {proc.ppid()}) {text[:100]}"
        return info

    def _role(self, proc: psutil.Process) -> ProcInfo:
        cmdline = proc.cmdline()
        parent = self.procs.get(proc.ppid())
        if parent is None or parent.role == "wrapper":
            name = os.path.basename(cmdline[0]) if cmdline else ""
            wrapper = name in ("sh", "unshare") if parent is None else name in ("ip", "cat")
            return ProcInfo(proc, "wrapper" if wrapper else "master", None)
        if parent.role == "master" and "p2pmr" in cmdline and "peer" in cmdline:
            return ProcInfo(proc, "peer", None)
        for ancestor in proc.parents():
            info = self.procs.get(ancestor.pid)
            if info is not None and info.role == "peer":
                return ProcInfo(proc, "worker", ancestor.pid)
        p2pmr_master = any("p2pmr" in i.cmdline for i in self.procs.values()
                           if i.role == "master")
        return ProcInfo(proc, "master" if p2pmr_master else "worker", None)

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in sorted(procs, key=_started):  # parents before their children
            try:
                info = self.procs.get(proc.pid)
                # A child caught between fork and exec still shows its
                # parent's command line: look again once it has its own (an
                # exiting process shows none: that is no new command line).
                cmdline = proc.cmdline()
                if (info is None or info.proc.create_time() != proc.create_time()
                        or (cmdline and info.cmdline != cmdline)):
                    info = self.procs[proc.pid] = self._classify(proc)
                times = proc.cpu_times()
                info.cpu = times.user + times.system
                info.hwm = max(info.hwm, _hwm(proc.pid))
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def kill_all(self) -> None:
        """SIGKILL whatever of the tree is still alive (psutil checks the
        process is the one seen, not a reused pid)."""
        for info in self.procs.values():
            with contextlib.suppress(psutil.Error):
                if info.proc.is_running():
                    info.proc.kill()


# --------------------------------------------------------------------------
# One run of one row.

@dataclass
class Run:
    """The measurements of one run of a row."""

    wall: float = 0.0
    ok: bool = True
    check: str = ""
    cpu_master: float = 0.0
    cpu_peers: list[float] = field(default_factory=list)
    cpu_workers: float = 0.0
    cpu_total: float = 0.0
    rss: dict[str, int] = field(default_factory=dict)
    traffic: dict[str, int] | None = None
    repo_bytes: int | None = None
    loopback: int | None = None
    processes: list[str] = field(default_factory=list)


ACTIVE: list[tuple[subprocess.Popen[bytes], TreeMonitor]] = []


def stop_tree(proc: subprocess.Popen[bytes], monitor: TreeMonitor, grace: float = 10.0
              ) -> None:
    """Stop a run: SIGTERM to its process group first, so that ``p2pmr run``
    stops its peers and they remove their temporary repos; then SIGKILL to
    whatever is left of the tree."""
    monitor.stop()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(i.proc) for i in monitor.procs.values()):
        time.sleep(0.1)
    monitor.kill_all()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _become_subreaper() -> bool:
    """Adopt orphaned descendants (PR_SET_CHILD_SUBREAPER), so that workers
    whose peer is gone are still reaped here and their CPU time counted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(36, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _reap_orphans(timeout: float = 10.0) -> None:
    """Wait for adopted orphans (their rusage joins RUSAGE_CHILDREN)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lo_tx(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    except (OSError, ValueError, IndexError):
        pass
    return None


def netns_prefix() -> list[str] | None:
    """The command prefix that runs a command in a fresh network namespace,
    or None where that is not permitted (then loopback bytes are n/a)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    for flags in (["-n"], ["-rn"]) if os.geteuid() == 0 else (["-rn"],):
        probe = subprocess.run(["unshare", *flags, "sh", "-c", "ip link set lo up"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["unshare", *flags]
    return None


def run_tree(cmd: list[str], work: Path, netns: list[str] | None, timeout: float,
             quiet_wait: float) -> tuple[Run, int, str]:
    """Run ``cmd`` as a measured process tree; returns the measurements, the
    exit code and the end of stderr."""
    before_f, after_f = work / "lo-before", work / "lo-after"
    if netns is not None:
        cmd = [*netns, "sh", "-c", NETNS_WRAPPER, "sh", str(before_f), str(after_f), *cmd]
    if quiet_wait > 0:
        wait_quiet(quiet_wait)
    cpu0 = _children_cpu()
    stderr_path = work / "stderr"
    run = Run()
    with open(stderr_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=work,
                                start_new_session=True)
        monitor = TreeMonitor(proc.pid)
        ACTIVE.append((proc, monitor))
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = -1
        run.wall = time.perf_counter() - start
        monitor.stop()
        if rc == -1:
            stop_tree(proc, monitor)
        monitor.kill_all()  # nothing may outlive the run
        ACTIVE.remove((proc, monitor))
    _reap_orphans()
    run.cpu_total = _children_cpu() - cpu0
    for info in monitor.procs.values():
        if info.role == "master":
            run.cpu_master += info.cpu
        elif info.role == "peer":
            run.cpu_peers.append(info.cpu)
        elif info.role == "worker":
            run.cpu_workers += info.cpu
        if info.role != "wrapper":
            run.rss[info.role] = max(run.rss.get(info.role, 0), info.hwm)
        run.processes.append(f"{info.proc.pid:>7} {info.role:<7} {info.cpu:7.2f} s "
                             f"{info.hwm / MIB:7.1f} MiB  {info.command}")
    if netns is not None:
        before, after = _lo_tx(before_f), _lo_tx(after_f)
        if before is not None and after is not None:
            run.loopback = after - before
    stderr = stderr_path.read_bytes()[-3000:].decode("utf-8", "replace")
    if rc == -1:
        stderr = f"timed out after {timeout:.0f} s\n{stderr}"
    return run, rc, stderr


# --------------------------------------------------------------------------
# The corpus and the expected answers.

def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """--data and --cache, for every benchmark that builds corpora here."""
    parser.add_argument("--data", type=Path, default=None,
                        help="directory of pg-*.txt texts (default: the shared data "
                             "directory beside the repository, else the bundled texts)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "p2pmr-bench-corpus",
                        help="where the corpora are kept between runs")


def corpus_texts(args: argparse.Namespace) -> Path:
    """The texts a corpus is made of: --data, else the shared data, else the bundled."""
    data: Path = args.data or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else BUNDLED_DATA)
    return data


def build_corpus(data: Path, size: int, cache: Path) -> Path:
    """The texts of ``data`` repeated to ``size`` bytes, cut after the last
    whole line that fits, so no row sees a broken character or line."""
    sources = sorted(data.glob("pg-*.txt")) or sorted(data.glob("*.txt"))
    if not sources:
        raise SystemExit(f"no texts in {data}")
    key = hashlib.sha256()
    for p in sources:
        st = p.stat()
        key.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    path = cache / f"corpus-{size // MIB}MiB-{key.hexdigest()[:12]}.txt"
    if path.exists() and path.stat().st_size > 0:
        return path
    texts = b"".join(t if t.endswith(b"\n") else t + b"\n"
                     for t in (p.read_bytes() for p in sources))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    written = 0
    with open(tmp, "wb") as out:
        while written < size:
            piece = texts[: size - written]
            if len(piece) < len(texts):
                piece = piece[: piece.rfind(b"\n") + 1]
                if not piece:
                    break
            out.write(piece)
            written += len(piece)
    tmp.replace(path)
    return path


def iter_lines(corpus: Path) -> Iterator[str]:
    """Whole lines as p2pmr's records see them: split on \\n, a trailing \\r
    dropped, decoded as UTF-8 with bad bytes replaced; a last line without a
    newline is a line."""
    with open(corpus, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n"):
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            yield raw.decode("utf-8", "replace")


def line_counts(corpus: Path) -> Counter[str]:
    return Counter(iter_lines(corpus))


def check_hot_key(output: Path, corpus: Path) -> str:
    """examples/hotkey.py's one record: the number of lines and their summed
    lengths in characters."""
    count = total = 0
    for line in iter_lines(corpus):
        count += 1
        total += len(line)
    got = list(read_parts(output))
    want = [("lines", f"({count}, {total})")]
    return "" if got == want else f"{got[:2]} vs {want}"


def read_parts(output: Path) -> Iterator[tuple[str, str]]:
    """Output records in order: ``key<TAB>value`` lines (split on \\n only:
    a key may hold any other line-breaking character)."""
    for part in sorted(output.glob("part-*")):
        text = part.read_bytes().decode("utf-8", "surrogateescape")
        for line in text.split("\n"):
            if line:
                key, _, value = line.rpartition("\t")
                yield key, value


def check_counts(output: Path, expected: Counter[str]) -> str:
    got: dict[str, int] = {}
    for key, value in read_parts(output):
        got[key] = got.get(key, 0) + int(value)
    if got == dict(expected):
        return ""
    missing = len(expected.keys() - got.keys())
    extra = len(got.keys() - expected.keys())
    wrong = sum(1 for k in expected.keys() & got.keys() if expected[k] != got[k])
    return f"{len(got)} keys vs {len(expected)}: {missing} missing, {extra} extra, {wrong} wrong"


def check_sorted(output: Path) -> str:
    previous: str | None = None
    for n, (key, _) in enumerate(read_parts(output)):
        if previous is not None and key < previous:
            return f"record {n} out of order"
        previous = key
    return ""


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# --------------------------------------------------------------------------
# The rows.

@dataclass
class Settings:
    netns: list[str] | None
    timeout: float
    quiet_wait: float
    split: int
    peers: int
    reducers: int


def run_row(row: str, corpus: Path, work: Path, s: Settings,
            expected: dict[str, Counter[str]]) -> Run:
    """One run of ``row``; the baseline fills ``expected["words"]``."""
    work.mkdir(parents=True)
    out = work / "out.json"
    if row == "baseline":
        cmd = [sys.executable, "-c", BASELINE, str(corpus), str(out)]
    elif row in ("pool", "dask"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "_inner", row, str(corpus),
               str(out), str(s.split)]
    else:
        out = work / "output"
        cmd = [sys.executable, "-m", "p2pmr", "run", str(EXAMPLES / P2PMR_JOBS[row]),
               "--input", str(corpus), "--reducers", str(s.reducers),
               "--local-peers", str(s.peers), "--repo", str(work / "repo"),
               "--output", str(out), "--no-progress"]
    run, rc, stderr = run_tree(cmd, work, s.netns, s.timeout, s.quiet_wait)
    if rc != 0:
        last = stderr.strip().splitlines()[-1:] or [""]
        run.ok, run.check = False, f"exit {rc}: {last[0][:120]}"
        print(f"    {row}: FAILED (exit {rc})\n{stderr}", file=sys.stderr)
        return run
    if row == "baseline":
        expected["words"] = Counter(json.loads(out.read_text()))
        run.check = "reference"
    elif row == "pool":
        got = Counter(json.loads(out.read_text()))
        run.check = "" if got == expected["words"] else "counts differ"
    elif row == "dask":
        run.check = "whitespace tokens, not compared"
        return run
    else:
        reports = sorted((work / "repo" / "jobs").glob("*/report.json"))
        if reports:
            report = json.loads(reports[-1].read_text())
            run.traffic = report.get("traffic")
        run.repo_bytes = dir_bytes(work / "repo")
        if row in ("wordcount", "wordcount-per-line"):
            run.check = check_counts(out, expected["words"])
        elif row == "linecount":
            if "lines" not in expected:
                expected["lines"] = line_counts(corpus)
            run.check = check_counts(out, expected["lines"])
        elif row == "hotkey":
            run.check = check_hot_key(out, corpus)
        else:
            problem = check_sorted(out)
            run.check = problem or "sorted (order only)"
            run.ok = not problem
            return run
    if run.check and run.check != "reference":
        run.ok = False
    run.check = run.check or "exact"
    return run


# --------------------------------------------------------------------------
# The table.

def _mib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / MIB:.2f}" if n < 10 * MIB else f"{n / MIB:.1f}"


def _cpu(run: Run) -> str:
    parts = [f"m {run.cpu_master:.1f}"]
    if run.cpu_peers:
        parts.append("p " + "+".join(f"{c:.1f}" for c in run.cpu_peers))
    if run.cpu_workers:
        parts.append(f"w {run.cpu_workers:.1f}")
    return " · ".join(parts)


def _rss(run: Run) -> str:
    return " · ".join(f"{role[0]} {run.rss[role] / MIB:.0f}"
                      for role in ("master", "peer", "worker") if role in run.rss)


def _traffic(run: Run) -> str:
    t = run.traffic
    if t is None:
        return "-"
    return (f"{_mib(t.get('protocol_in', 0))}/{_mib(t.get('protocol_out', 0))} · "
            f"{_mib(t.get('blocks_in', 0))}/{_mib(t.get('blocks_out', 0))}")


HEADER = ("| size MiB | row | wall s | x baseline | CPU s by role | CPU s total "
          "| master traffic MiB: frames in/out · blocks in/out | master repo MiB "
          "| loopback MiB | peak RSS MiB by role | check |")


def table_row(size_mib: int, row: str, runs: list[Run], base_wall: float | None,
              note: str = "") -> str:
    if not runs:
        return f"| {size_mib} | {row} | - | - | - | - | - | - | - | - | {note} |"
    ordered = sorted(runs, key=lambda r: r.wall)
    median = ordered[(len(ordered) - 1) // 2]  # the lower median: a run that happened
    wall = statistics.median(r.wall for r in runs)
    ratio = f"{wall / base_wall:.2f}" if base_wall else "-"
    failed = [r for r in runs if not r.ok]
    check = f"FAILED: {failed[0].check}" if failed else median.check
    walls = f"{wall:.2f}" + (f" ({', '.join(f'{r.wall:.2f}' for r in runs)})"
                             if len(runs) > 1 else "")
    loop = "n/a" if median.loopback is None else _mib(median.loopback)
    repo = "-" if median.repo_bytes is None else _mib(median.repo_bytes)
    return (f"| {size_mib} | {row} | {walls} | {ratio} | {_cpu(median)} | "
            f"{median.cpu_total:.1f} | {_traffic(median)} | {repo} | {loop} | "
            f"{_rss(median)} | {check} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,256,1024",
                        help="corpus sizes in MiB, comma-separated (4096 works too)")
    parser.add_argument("--rows", default=",".join(ROWS[1:]),
                        help=f"rows besides the baseline (always run): {', '.join(ROWS[1:])}")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row; medians")
    add_corpus_options(parser)
    parser.add_argument("--peers", type=int, default=2, help="local peers of p2pmr rows")
    parser.add_argument("--reducers", type=int, default=2, help="reducers of p2pmr rows")
    parser.add_argument("--split-kib", type=int, default=256,
                        help="split size of the pool and dask rows (p2pmr's block size)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--processes", action="store_true",
                        help="also list every process of every run (role, CPU, peak RSS) "
                             "on stderr")
    parser.add_argument("--quiet-wait", type=float, default=5.0,
                        help="at most this many seconds to wait for an idle machine per run")
    args = parser.parse_args()

    rows = [r.strip() for r in args.rows.split(",") if r.strip() and r.strip() != "baseline"]
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    data = corpus_texts(args)
    netns = netns_prefix()
    subreaper = _become_subreaper()
    try:
        import dask  # noqa: F401
        have_dask = True
    except ImportError:
        have_dask = False
    s = Settings(netns, args.timeout, args.quiet_wait, args.split_kib * 1024, args.peers,
                 args.reducers)
    print(f"# data plane: {args.peers} local peers, {args.reducers} reducers, "
          f"{args.repeat} run(s) per row; load average {loadavg()}; "
          f"loopback {'via ' + ' '.join(netns) if netns else 'n/a (no network namespace)'}; "
          f"CPU total {'exact' if subreaper else 'without orphans'}\n")
    print(HEADER)
    print("|" + " --- |" * (HEADER.count(" | ") + 1))

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Installed even where the shell started us with SIGINT ignored (in the
    # background): an interrupted benchmark must still stop its processes.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    failed = False
    with tempfile.TemporaryDirectory(prefix="p2pmr-dataplane-") as tmp:
        try:
            for size_mib in sizes:
                corpus = build_corpus(data, size_mib * MIB, args.cache)
                expected: dict[str, Counter[str]] = {}
                base = [run_row("baseline", corpus, Path(tmp) / f"{size_mib}-baseline-{i}", s,
                                expected) for i in range(args.repeat)]
                base_ok = all(r.ok for r in base)
                base_wall = statistics.median(r.wall for r in base) if base_ok else None
                print(table_row(size_mib, "baseline", base, base_wall), flush=True)
                if not base_ok:
                    failed = True
                    continue
                for row in rows:
                    note = ""
                    if row == "dask" and not have_dask:
                        note = "not installed (pip install -e '.[bench]')"
                    elif row in P2PMR_JOBS and not (EXAMPLES / P2PMR_JOBS[row]).exists():
                        note = f"skipped: no examples/{P2PMR_JOBS[row]}"
                    runs = [] if note else [
                        run_row(row, corpus, Path(tmp) / f"{size_mib}-{row}-{i}", s, expected)
                        for i in range(args.repeat)]
                    failed |= any(not r.ok for r in runs)
                    if args.processes:
                        for i, r in enumerate(runs):
                            print(f"processes of {size_mib} MiB {row} run {i + 1}:",
                                  *r.processes, sep="\n  ", file=sys.stderr)
                    print(table_row(size_mib, row, runs, base_wall, note), flush=True)
                    for i in range(args.repeat):  # repos and outputs can be large
                        shutil.rmtree(Path(tmp) / f"{size_mib}-{row}-{i}", ignore_errors=True)
        except KeyboardInterrupt as exc:
            print(f"\ninterrupted ({exc or 'SIGINT'}): stopping the run's processes",
                  file=sys.stderr)
            failed = True
        finally:
            for proc, monitor in list(ACTIVE):
                stop_tree(proc, monitor)
    print("\nCPU s by role: m master (with its non-peer helpers), p each peer alone, w all "
          "task workers; peak RSS: the largest process of each role.")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_inner":
        _inner(sys.argv[2:])
    else:
        main()
