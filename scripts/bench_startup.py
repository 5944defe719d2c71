"""Start-up of ``p2pmr run --local-peers N`` on a tiny input, as a user sees it.

Runs, as a whole process, ``--repeat`` times::

    p2pmr run examples/wordcount.py --input TINY --local-peers N --no-progress

with debug logging, and times from the moment the process is started:

* ``peer joined``: the master first hears of a local peer;
* ``first task``: a peer first receives an assignment (the first map task
  dispatched);
* ``end``: the process exits, output written.

Times are taken as each log line arrives, not from the log's timestamps, so
they include interpreter start-up and imports. It also times, for the same
interpreter, ``p2pmr --help`` and the imports of a worker process
(``import p2pmr._worker``), and says whether either imported libp2p.

    python scripts/bench_startup.py --peers 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKS = {"peer joined": "joined", "first task": "assignment of"}


def run_once(work: Path, peers: int) -> dict[str, float]:
    tiny = work / "tiny.txt"
    tiny.write_text("the quick brown fox\njumps over the lazy dog\n" * 100)
    repo = work / f"repo-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "p2pmr", "run", str(ROOT / "examples" / "wordcount.py"),
           "--input", str(tiny), "--local-peers", str(peers), "--repo", str(repo),
           "--no-progress"]
    env = {**os.environ, "P2PMR_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    seen: dict[str, float] = {}
    assert proc.stderr is not None
    for line in proc.stderr:
        for name, needle in MARKS.items():
            if name not in seen and needle in line:
                seen[name] = time.perf_counter() - start
    if proc.wait() != 0:
        raise SystemExit(f"p2pmr run failed (exit status {proc.returncode})")
    seen["end"] = time.perf_counter() - start
    return seen


def time_command(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imports_libp2p(code: str) -> bool:
    probe = f"{code}\nimport sys\nprint(any(m.startswith('libp2p') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True).stdout
    return out.strip().endswith("True")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; medians reported")
    args = parser.parse_args()
    help_time = time_command(["-m", "p2pmr", "--help"], args.repeat)
    worker_time = time_command(["-c", "import p2pmr._worker"], args.repeat)
    cli_libp2p = imports_libp2p("import p2pmr.cli")
    worker_libp2p = imports_libp2p("import p2pmr._worker")
    print(f"p2pmr --help                 {help_time:6.3f} s   import p2pmr.cli imports "
          f"libp2p: {cli_libp2p}")
    print(f"import p2pmr._worker         {worker_time:6.3f} s   imports libp2p: "
          f"{worker_libp2p}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="p2pmr-startup-") as tmp:
        for _ in range(args.repeat):
            runs.append(run_once(Path(tmp), args.peers))
    print(f"p2pmr run --local-peers {args.peers}, tiny input, {args.repeat} run(s) (medians):")
    for name in (*MARKS, "end"):
        values = [r[name] for r in runs if name in r]
        if values:
            print(f"  {name:<12} {statistics.median(values):6.3f} s   runs: "
                  f"{', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
