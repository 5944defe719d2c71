"""Fault-tolerance measurements: detection, recovery and journaling cost.

Runs a master in this process and real ``p2pmr peer`` processes on
127.0.0.1, and measures, each against a baseline from the same run:

* time to detect a dead peer: SIGKILL (the connection drops) and SIGSTOP
  (a hung peer, found by the heartbeat deadline), from the signal until the
  master has returned the peer's tasks to idle;
* time to finish a job when a peer dies in the middle, against the same
  job with no failure;
* journaling overhead: the same job with and without the durable journal.

    python scripts/bench_failover.py [--peer-timeout 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pmr import InitMaster, open_node  # noqa: E402
from p2pmr.job import Job  # noqa: E402
from p2pmr.node import Node  # noqa: E402
from p2pmr.ready import peer_command, start_peer_blocking  # noqa: E402
from p2pmr.wire.framing import PROTOCOL_ID  # noqa: E402


def slow_map(records):  # type: ignore[no-untyped-def]
    import time as _time

    n = sum(1 for _ in records)
    _time.sleep(0.25)
    yield "records", n


def add(key, values):  # type: ignore[no-untyped-def]
    yield key, sum(values)


JOB = Job(reduce=add, map_batch=slow_map, name="failover")


class Peers:
    def __init__(self, base: Path, master: Node, n: int, workers: int = 1) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(n):
            proc, _ = start_peer_blocking(peer_command(
                base / f"peer-{i}", ["--bootstrap", master.multiaddrs[0], "--trust",
                                     str(master.peer_id), "--workers", str(workers)]),
                stderr=subprocess.DEVNULL)
            self.procs.append(proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def wait_for_workers(master: Node, n: int) -> None:
    with trio.fail_after(60):
        while True:
            if len(master.network.peers_speaking(PROTOCOL_ID)) >= n:
                return
            await trio.sleep(0.05)


async def run_job(base: Path, cid: object, n_peers: int, *, fault: str | None = None,
                  peer_timeout: float = 5.0, journal: bool = True) -> dict[str, float]:
    """One job; optionally SIGKILL or SIGSTOP one peer in the middle of the map phase."""
    async with open_node(base / "master") as master:
        peers = await trio.to_thread.run_sync(Peers, base, master, n_peers)
        try:
            await wait_for_workers(master, n_peers)
            data = cid if not isinstance(cid, Path) else await master.add_path(cid)
            job = InitMaster(master, data, job=JOB, n_reducers=2, peer_timeout=peer_timeout,
                             journal=journal)
            result: dict[str, float] = {}

            async def inject() -> None:
                def a_third_done() -> bool:
                    status = job.get_map_status()
                    return status.total > 0 and status.complete >= status.total // 3

                # A third of the way into the map phase every peer holds work.
                while not a_third_done():  # noqa: ASYNC110 (polls the status API)
                    await trio.sleep(0.01)
                signum = signal.SIGKILL if fault == "kill" else signal.SIGSTOP
                at = time.monotonic()
                os.killpg(peers.procs[0].pid, signum)
                # Detected once the master has written the peer off (offline,
                # or charged with the failure of the tasks it held).
                while not any(not s.online or s.failed  # noqa: ASYNC110 (polls the status API)
                              for s in job.get_peer_status().values()):
                    await trio.sleep(0.005)
                result["detect"] = time.monotonic() - at

            start = time.monotonic()
            async with trio.open_nursery() as nursery:
                if fault:
                    nursery.start_soon(inject)
                await job.run()
                nursery.cancel_scope.cancel()
            result["total"] = time.monotonic() - start
            journal_obj = job._journal
            if journal_obj is not None:
                result["fsync"] = journal_obj.sync_seconds
                result["appends"] = journal_obj.appends
            return result
        finally:
            peers.close()


async def main(args: argparse.Namespace) -> None:
    corpus = ROOT / "examples" / "data" / "gutenberg"
    rows: dict[str, list[dict[str, float]]] = {"clean": [], "kill": [], "stop": [],
                                               "no-journal": []}
    for i in range(args.repeat):
        for case in rows:
            with tempfile.TemporaryDirectory(prefix="p2pmr-failover-") as tmp:
                fault = case if case in ("kill", "stop") else None
                rows[case].append(await run_job(
                    Path(tmp), corpus, args.peers, fault=fault, peer_timeout=args.peer_timeout,
                    journal=case != "no-journal"))
        print(f"round {i + 1}: " + "  ".join(
            f"{case} {rows[case][-1]['total']:.2f}s" for case in rows), flush=True)

    def med(case: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[case])

    clean = med("clean", "total")
    print(f"\n{args.peers} peers, 24 map tasks of >= 0.25 s, peer timeout {args.peer_timeout:g} s,"
          f" medians of {args.repeat}")
    print(f"  detect a killed peer (SIGKILL)       {med('kill', 'detect'):6.3f} s")
    print(f"  detect a hung peer (SIGSTOP)         {med('stop', 'detect'):6.3f} s")
    print(f"  job, no failure                      {clean:6.2f} s")
    print(f"  job, one peer killed mid-map         {med('kill', 'total'):6.2f} s   "
          f"({med('kill', 'total') / clean:.2f}x)")
    print(f"  job, one peer hung mid-map           {med('stop', 'total'):6.2f} s   "
          f"({med('stop', 'total') / clean:.2f}x)")
    no_journal = med("no-journal", "total")
    print(f"  job without the journal              {no_journal:6.2f} s")
    print(f"  journaling overhead                  {100 * (clean - no_journal) / no_journal:+.1f}%"
          f" of job time ({med('clean', 'appends'):.0f} fsync'd appends, "
          f"{1000 * med('clean', 'fsync'):.0f} ms in fsync = "
          f"{100 * med('clean', 'fsync') / clean:.1f}% of job time, off the event loop)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--peer-timeout", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    trio.run(main, parser.parse_args())
