"""What one broken or hostile peer costs a job, and what trust mistakes cost.

Runs a master in this process and real peer processes on 127.0.0.1: a word
count over S MiB on two honest peers (the baseline), then the same job with
a third peer that fails every task at once in one way (tests/chaos_peer.py).
Reports each run's time as a ratio to the baseline, whether the output was
exact, and how often the bad peer failed before it was excluded. Then the
time a job takes to fail when its only peer does not trust the master.

    python scripts/bench_bad_peers.py [--size-mib 64] [--modes error-fast,refuse,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pmr import InitMaster, JobFailed, open_node  # noqa: E402
from p2pmr.job import load_job_file  # noqa: E402
from scripts._benchutil import loadavg, wait_quiet  # noqa: E402
from tests.helpers import GUTENBERG, PeerProcess  # noqa: E402
from tests.swarm import Swarm, output_counts, reference_counts  # noqa: E402

MODES = ["error-fast", "refuse", "oversize", "garbage", "bad-cid", "fake-user-error",
         "no-input", "cancel-fast", "busy"]


def make_input(path: Path, size: int) -> Path:
    corpus = b"".join(p.read_bytes() for p in sorted(GUTENBERG.glob("pg-*.txt")))
    path.write_bytes((corpus * (size // len(corpus) + 1))[:size])
    return path


async def one_run(base: Path, data: Path, expected: dict[str, int], mode: str | None
                  ) -> tuple[float, bool, str]:
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with open_node(base / "master") as master:
        cid = await master.add_path(data)
        swarm = Swarm(master, base / "peers")
        try:
            bad = None
            if mode is not None:
                bad = await trio.to_thread.run_sync(lambda: swarm.start(mode, name="bad"))
            for _ in range(2):
                await trio.to_thread.run_sync(swarm.start)
            await trio.sleep(1)  # every peer known to the master before the job
            wait_quiet()
            job = InitMaster(master, cid, job=wordcount, n_reducers=3)
            started = time.perf_counter()
            root = await job.run()
            took = time.perf_counter() - started
            exact = await output_counts(master, root) == expected
            detail = ""
            if bad is not None:
                status = job.get_peer_status()[bad.peer_id]
                detail = (f"bad peer failed {status.failed}x, "
                          + (f"excluded: {status.excluded_reason}" if status.excluded
                             else "not excluded"))
            return took, exact, detail
        finally:
            swarm.close()


async def untrusted(base: Path) -> float:
    wordcount = load_job_file(ROOT / "examples" / "wordcount.py")
    async with open_node(base / "master") as master:
        cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
        peer = await trio.to_thread.run_sync(
            lambda: PeerProcess(base / "peer", ["--bootstrap", master.multiaddrs[0]]))
        try:
            started = time.perf_counter()
            try:
                await InitMaster(master, cid, job=wordcount, n_reducers=1).run()
            except JobFailed:
                return time.perf_counter() - started
            raise AssertionError("the job ran on a peer that does not trust its master")
        finally:
            peer.kill()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = make_input(base / "input.txt", args.size_mib * 1024 * 1024)
        expected = reference_counts([data])
        print(f"word count of {args.size_mib} MiB, 3 reducers, load {loadavg()}")
        baseline, exact, _ = await one_run(base / "baseline", data, expected, None)
        print(f"  2 honest peers:               {baseline:6.2f} s  (1.00)  exact={exact}")
        for mode in args.modes.split(","):
            took, exact, detail = await one_run(base / mode, data, expected, mode)
            print(f"  + 1 {mode + ' peer:':<26}{took:6.2f} s  ({took / baseline:.2f})  "
                  f"exact={exact}; {detail}")
        took = await untrusted(base / "untrusted")
        print(f"a job whose only peer does not trust the master fails after {took:.1f} s "
              f"(wait_for_workers is 120 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES))
    trio.run(main, parser.parse_args())
