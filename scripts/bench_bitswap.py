"""Benchmark Bitswap block exchange between two p2pmr processes on 127.0.0.1.

What is measured
----------------
A ``--size-mib`` MiB (default 64) file of random bytes is added to repo A
with ``p2pmr add``, and ``p2pmr peer --repo A --workers 1 --listen
/ip4/127.0.0.1/tcp/0`` runs as the serving process (one task worker, so an
idle worker pool takes no start-up CPU from the measurement). Then, each
round (``--repeats``, default 3), in the same run and against the same kind
of processes:

* ``raw stream`` (the baseline): a separate pair of processes, each with a
  host built exactly like a p2pmr node's (``p2pmr.node._build_host``: TCP,
  Noise, yamux), on 127.0.0.1. The client opens one stream and asks for N
  bytes; the server writes them in ``--raw-write-kib`` KiB writes and
  half-closes; the client reads until EOF. Timed in the client from opening
  the stream to EOF (the connection is already up).
* ``Bitswap fetch_dag``: a fresh child process with an empty repo B opens a
  node bootstrapped to A and times only ``p2pmr.blockstore.fetch_dag`` of the
  file's root (the connection is already up). Afterwards it reads the file
  back from its own store and the sha256 is checked against the input.
* ``p2pmr cat`` (``--cli-repeats``, default 2): the CLI as a whole process,
  ``p2pmr cat CID --repo B --bootstrap A``, stdout checked by sha256. The fixed
  cost of starting a process, a node and a connection is measured by catting
  a 1-block file the same way, and subtracted.

CPU seconds (user+sys) of both processes over each transfer are reported, to
show which side is the bottleneck, and so is the CPU everything else on the
machine used meanwhile ("other CPU %", from /proc/stat): the ratio to the raw
baseline is only meaningful when that is low. The summary gives the best
round (highest MB/s) with the median beside it; MB/s means 10**6 bytes per
second.
``--profile`` adds one extra, untimed transfer with the fetching child under
cProfile and the serving peer restarted under cProfile, and prints both.

Run::

    python scripts/bench_bitswap.py
    python scripts/bench_bitswap.py --size-mib 16 --repeats 5 --profile

Only 127.0.0.1 is used. Every process started is terminated (then killed) and
every temporary directory removed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _benchutil import CLK_TCK, loadavg, system_busy_seconds, wait_quiet

from p2pmr.errors import NodeError
from p2pmr.ready import ready_line, start_peer_blocking

MIB = 1024 * 1024
TARGET_MBPS = 30.0
RAW_PROTOCOL = "/p2pmr-bench/raw/1.0.0"
LISTEN = "/ip4/127.0.0.1/tcp/0"


# -- child processes -------------------------------------------------------------


class Child:
    """A child process that announces itself with p2pmr's ready line."""

    def __init__(self, cmd: Sequence[str], *, timeout: float = 60.0) -> None:
        self.stderr_lines: list[str] = []

        def drain_stderr(proc: subprocess.Popen[str]) -> None:
            threading.Thread(target=self._drain, args=(proc.stderr, self.stderr_lines),
                             daemon=True).start()

        try:
            self.proc, ready = start_peer_blocking(cmd, timeout=timeout, stderr=subprocess.PIPE,
                                                   started=drain_stderr)
        except NodeError as exc:
            raise RuntimeError(f"{exc}:\n{self.stderr}") from None
        self.addrs = list(ready.addrs)
        threading.Thread(target=self._drain, args=(self.proc.stdout, []), daemon=True).start()

    @staticmethod
    def _drain(pipe: Any, sink: list[str]) -> None:
        for line in pipe:
            sink.append(line)
            del sink[:-200]

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines[-40:])

    @property
    def addr(self) -> str:
        tcp = [a for a in self.addrs if a.startswith("/ip4/127.0.0.1/tcp/")]
        if not tcp:
            raise RuntimeError(f"no 127.0.0.1 TCP address among {self.addrs}")
        return tcp[0]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # also any grandchildren
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def proc_cpu_seconds(pid: int) -> float:
    """user+sys CPU of a live process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return float("nan")


class CPUWindow:
    """CPU used over an interval by this process, by one other process, and by
    everything else on the machine (other tenants, kernel threads)."""

    def __init__(self, remote_pid: int) -> None:
        self.remote_pid = remote_pid
        self.busy0 = system_busy_seconds()
        self.own0 = self_cpu_seconds()
        self.remote0 = proc_cpu_seconds(remote_pid)

    def close(self, seconds: float) -> dict[str, float]:
        own = self_cpu_seconds() - self.own0
        remote = proc_cpu_seconds(self.remote_pid) - self.remote0
        other = system_busy_seconds() - self.busy0 - own - remote
        return {"cpu": own, "remote_cpu": remote, "other_pct": max(0.0, other) / seconds * 100}


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def self_sys_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def p2pmr_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pmr", *args]


def this_script(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *args]


def run_json(cmd: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a child that prints one JSON object on its last stdout line."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          check=False, start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- in-child code: raw stream server and client ------------------------------------


def _host() -> Any:
    from libp2p.crypto.ed25519 import create_new_key_pair

    from p2pmr.node import _build_host

    return _build_host(create_new_key_pair(), None)


async def _quiet_network(host: Any) -> None:
    # As open_node does: no auto-connector re-dialling peers behind our back.
    await host.get_network().auto_connector.stop()


async def raw_server(write_size: int) -> None:
    """Serve RAW_PROTOCOL: read an 8-byte length, write that many bytes, half-close."""
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol

    payload = os.urandom(max(write_size, MIB))
    host = _host()

    async def handle(stream: Any) -> None:
        try:
            request = b""
            while len(request) < 8:
                request += await stream.read(8 - len(request))
            (total,) = struct.unpack(">Q", request)
            sent = 0
            while sent < total:
                n = min(write_size, total - sent)
                await stream.write(payload[:n])
                sent += n
            await stream.close_write()
        except Exception as exc:  # a benchmark server: report and carry on
            print(f"raw server: stream failed: {exc!r}", file=sys.stderr, flush=True)

    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
        await _quiet_network(host)
        host.set_stream_handler(TProtocol(RAW_PROTOCOL), handle)
        addrs = [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{host.get_id()}"
                 for a in host.get_addrs()]
        print(ready_line(str(host.get_id()), addrs, 0), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                return


async def raw_client(addr: str, size: int, remote_pid: int) -> dict[str, Any]:
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF
    from libp2p.peer.peerinfo import info_from_p2p_addr

    host = _host()
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
        await _quiet_network(host)
        with trio.fail_after(20):
            await host.connect(info)
        window = CPUWindow(remote_pid)
        start = time.perf_counter()
        stream = await host.new_stream(info.peer_id, [TProtocol(RAW_PROTOCOL)])
        await stream.write(struct.pack(">Q", size))
        received = 0
        while True:
            try:
                piece = await stream.read(MIB)
            except StreamEOF:
                break
            if not piece:  # other muxers may signal EOF this way
                break
            received += len(piece)
        seconds = time.perf_counter() - start
        cpu = window.close(seconds)
        await stream.close()
    return {"seconds": seconds, "bytes": received, **cpu}


async def fetch_child(repo: Path, addr: str, cid_text: str, timeout: float,
                      profile_out: Path | None, remote_pid: int) -> dict[str, Any]:
    """Open a node on ``repo`` bootstrapped to ``addr``; time fetch_dag of ``cid_text``."""
    import cProfile

    import trio

    from p2pmr.node import open_node, parse_peer_addr
    from p2pmr.storage import unixfs
    from p2pmr.storage.base import fetch_dag
    from p2pmr.storage.cid import CID

    root = CID.parse(cid_text)
    peer_id, _ = parse_peer_addr(addr)
    async with open_node(repo, bootstrap=[addr]) as node:
        with trio.fail_after(20):
            # open_node has dialled already; no event exists for "connected".
            while not node.is_connected(peer_id):  # noqa: ASYNC110
                await trio.sleep(0.01)
        profiler = cProfile.Profile() if profile_out else None
        sys0 = self_sys_seconds()
        window = CPUWindow(remote_pid)
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        blocks = await fetch_dag(node.blocks, root, timeout=timeout)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        cpu = window.close(seconds)
        sys_cpu = self_sys_seconds() - sys0
        if profiler is not None and profile_out is not None:
            profiler.dump_stats(str(profile_out))
        # Untimed: read the file back from our own store and hash it.
        assert node.local is not None
        digest = hashlib.sha256()
        size = 0

        async def consume(piece: bytes) -> None:
            nonlocal size
            digest.update(piece)
            size += len(piece)

        await unixfs.cat(node.local, root, consume)
        stats = node.bitswap.stats if node.bitswap is not None else None
        return {"seconds": seconds, **cpu, "sys_cpu": sys_cpu, "blocks": blocks, "bytes": size,
                "sha256": digest.hexdigest(),
                "duplicate_blocks": stats.duplicate_blocks if stats else None,
                "bytes_received": stats.bytes_received if stats else None}


def child_main(args: argparse.Namespace) -> int:
    import trio

    if args.child == "raw-server":
        trio.run(raw_server, args.raw_write_kib * 1024)
        return 0
    if args.child == "raw-client":
        print(json.dumps(trio.run(raw_client, args.child_addr, args.size_mib * MIB,
                                  args.child_remote_pid)))
        return 0
    if args.child == "fetch":
        result = trio.run(fetch_child, args.child_repo, args.child_addr, args.child_cid,
                          args.timeout, args.child_profile, args.child_remote_pid)
        print(json.dumps(result))
        return 0
    raise SystemExit(f"unknown child {args.child}")


# -- the benchmark -------------------------------------------------------------------


@dataclass
class Series:
    name: str
    nbytes: int
    seconds: list[float] = field(default_factory=list)
    cpu_local: list[float] = field(default_factory=list)   # the receiving process
    cpu_remote: list[float] = field(default_factory=list)  # the sending process
    others: list[float] = field(default_factory=list)  # everything else, % of a core

    def add(self, result: dict[str, Any]) -> None:
        self.seconds.append(result["seconds"])
        self.cpu_local.append(result["cpu"])
        self.cpu_remote.append(result["remote_cpu"])
        self.others.append(result["other_pct"])

    def rate(self, seconds: float) -> float:
        return self.nbytes / seconds / 1e6

    @property
    def best(self) -> float:
        return self.rate(min(self.seconds)) if self.seconds else float("nan")

    @property
    def median(self) -> float:
        return self.rate(statistics.median(self.seconds)) if self.seconds else float("nan")


def add_file(repo: Path, path: Path) -> str:
    proc = subprocess.run(p2pmr_cmd("add", str(path), "--repo", str(repo)), capture_output=True,
                          text=True, timeout=300, check=True)
    return proc.stdout.strip().splitlines()[-1]


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def fetch_once(args: argparse.Namespace, work: Path, peer: Child, cid: str, tag: str,
               profile_out: Path | None = None) -> dict[str, Any]:
    repo = work / f"repo-b-{tag}"
    cmd = this_script("--child", "fetch", "--child-repo", str(repo), "--child-addr", peer.addr,
                      "--child-cid", cid, "--timeout", str(args.timeout),
                      "--child-remote-pid", str(peer.proc.pid))
    if profile_out is not None:
        cmd += ["--child-profile", str(profile_out)]
    try:
        return run_json(cmd, timeout=args.timeout + 120)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def raw_once(args: argparse.Namespace, server: Child) -> dict[str, Any]:
    cmd = this_script("--child", "raw-client", "--child-addr", server.addr,
                      "--size-mib", str(args.size_mib), "--child-remote-pid", str(server.proc.pid))
    return run_json(cmd, timeout=args.timeout + 120)


def cli_cat_once(args: argparse.Namespace, work: Path, peer: Child, cid: str, tag: str
                 ) -> tuple[float, str]:
    """Time ``p2pmr cat`` as a whole process; return (seconds, sha256 of its stdout)."""
    repo = work / f"repo-cli-{tag}"
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            p2pmr_cmd("cat", cid, "--repo", str(repo), "--bootstrap", peer.addr,
                      "--timeout", str(args.timeout)),
            capture_output=True, timeout=args.timeout + 120, check=False,
            start_new_session=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"p2pmr cat failed ({proc.returncode}):\n"
                               f"{proc.stderr.decode(errors='replace')[-4000:]}")
        return seconds, hashlib.sha256(proc.stdout).hexdigest()
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def print_profile(label: str, path: Path, top: int) -> None:
    if not path.exists():
        print(f"\n--- cProfile: {label}: no profile written ---")
        return
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    print(f"\n--- cProfile: {label} (sorted by tottime) ---")
    print("\n".join(line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith("   Ordered by")))


def run(args: argparse.Namespace, work: Path) -> int:
    size = args.size_mib * MIB
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {loadavg()}; "
          f"{args.size_mib} MiB random file, 127.0.0.1 only, {args.repeats} rounds")
    src = work / "input.bin"
    expected = write_random_file(src, size)
    tiny = work / "tiny.bin"
    tiny_sha = write_random_file(tiny, 1000)
    repo_a = work / "repo-a"
    cid = add_file(repo_a, src)
    tiny_cid = add_file(repo_a, tiny)
    print(f"added {cid} ({args.size_mib} MiB) and {tiny_cid} (1000 B) to repo A")

    raw = Series("raw py-libp2p stream", size)
    bitswap = Series("Bitswap fetch_dag", size)
    cli = Series("p2pmr cat - startup", size)
    cli_whole = Series("p2pmr cat, whole process", size)
    startup: list[float] = []
    problems: list[str] = []

    with Child(this_script("--child", "raw-server", "--raw-write-kib",
                           str(args.raw_write_kib))) as server, \
            Child(p2pmr_cmd("peer", "--repo", str(repo_a), "--workers", "1",
                            "--listen", LISTEN)) as peer:
        # The peer spawns its worker process after its ready line; let that finish.
        waited = wait_quiet()
        print(f"peer A: {peer.addr}\nraw server: {server.addr}\n"
              f"(waited {waited:.1f}s for the machine to go quiet; load average {loadavg()})\n")
        print(f"{'round':<6} {'raw MB/s':>9} {'bitswap MB/s':>13} {'ratio':>6}  "
              f"{'CPU s rx/tx: raw':>16} {'bitswap':>11}  {'other CPU %':>12}")
        for round_no in range(1, args.repeats + 1):
            r = raw_once(args, server)
            if r["bytes"] != size:
                problems.append(f"raw round {round_no}: got {r['bytes']} of {size} bytes")
            raw.add(r)
            b = fetch_once(args, work, peer, cid, f"r{round_no}")
            if b["sha256"] != expected or b["bytes"] != size:
                problems.append(f"bitswap round {round_no}: sha256/size MISMATCH "
                                f"({b['bytes']} bytes)")
            bitswap.add(b)
            raw_rate, bs_rate = raw.rate(r["seconds"]), bitswap.rate(b["seconds"])
            print(f"{round_no:<6} {raw_rate:>9.1f} {bs_rate:>13.1f} {bs_rate / raw_rate:>6.2f}  "
                  f"{r['cpu']:>8.2f}/{r['remote_cpu']:<7.2f} "
                  f"{b['cpu']:>5.2f}/{b['remote_cpu']:<5.2f}  "
                  f"{r['other_pct']:>5.0f}/{b['other_pct']:<5.0f} "
                  f"({b['blocks']} blocks, {b['duplicate_blocks']} dup)", flush=True)

        for round_no in range(1, args.cli_repeats + 1):
            t_tiny, sha_tiny = cli_cat_once(args, work, peer, tiny_cid, f"t{round_no}")
            t_big, sha_big = cli_cat_once(args, work, peer, cid, f"b{round_no}")
            if sha_tiny != tiny_sha:
                problems.append(f"cli round {round_no}: tiny file sha256 MISMATCH")
            if sha_big != expected:
                problems.append(f"cli round {round_no}: sha256 MISMATCH")
            startup.append(t_tiny)
            cli_whole.seconds.append(t_big)
            cli.seconds.append(max(t_big - t_tiny, 1e-9))
            print(f"cli {round_no}: p2pmr cat 1-block file {t_tiny:.2f}s, "
                  f"{args.size_mib} MiB file {t_big:.2f}s -> "
                  f"{cli.rate(cli.seconds[-1]):.1f} MB/s after subtracting startup", flush=True)

    if args.profile:
        profile_run(args, work, repo_a, cid, expected)

    print_summary(args, raw, bitswap, cli, cli_whole, startup)
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
    else:
        print("\nAll transfers verified (Bitswap and cat: sha256 of the whole file; "
              "raw: byte count).")
    print(f"load average at the end: {loadavg()}")
    return 0


def profile_run(args: argparse.Namespace, work: Path, repo_a: Path, cid: str,
                expected: str) -> None:
    """One more transfer, untimed, with both processes under cProfile."""
    fetch_prof = work / "fetch.prof"
    peer_prof = work / "peer.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(peer_prof), "-m", "p2pmr",
           "peer", "--repo", str(repo_a), "--workers", "1", "--listen", LISTEN]
    with Child(cmd) as peer:
        result = fetch_once(args, work, peer, cid, "profile", profile_out=fetch_prof)
    ok = "ok" if result["sha256"] == expected else "MISMATCH"
    rate = result["bytes"] / result["seconds"] / 1e6
    print(f"\nprofiled transfer: {rate:.1f} MB/s under cProfile (sha256 {ok})")
    print_profile("fetching process, main thread, during fetch_dag", fetch_prof,
                  args.profile_top)
    print_profile("serving peer, main thread, whole life", peer_prof, args.profile_top)


def print_summary(args: argparse.Namespace, raw: Series, bitswap: Series, cli: Series,
                  cli_whole: Series, startup: list[float]) -> None:
    print(f"\n=== Summary: {args.size_mib} MiB between two processes on 127.0.0.1 "
          f"(best of {args.repeats}; median in brackets; MB = 10^6 bytes) ===")
    print(f"{'measurement':<36} {'MB/s':>7} {'(median)':>10} {'/ raw':>6} "
          f"{'CPU s rx/tx':>12} {'other CPU %':>12}")

    def row(series: Series, note: str = "") -> None:
        cpu = (f"{statistics.median(series.cpu_local):.2f}/"
               f"{statistics.median(series.cpu_remote):.2f}") if series.cpu_local else "-"
        other = f"{statistics.median(series.others):.0f}" if series.others else "-"
        median = f"({series.median:.1f})"
        print(f"{series.name + note:<36} {series.best:>7.1f} {median:>10} "
              f"{series.best / raw.best:>6.2f} {cpu:>12} {other:>12}")

    row(raw, f" ({args.raw_write_kib} KiB writes)")
    row(bitswap, " (fetch only)")
    if cli.seconds:
        row(cli)
        row(cli_whole)
        print(f"{'startup: p2pmr cat of 1-block file':<36} {min(startup):>6.2f}s "
              f"{f'({statistics.median(startup):.2f}s)':>10}")
    print("(CPU s: median user+sys seconds of the receiving/sending process during the "
          "transfer.\n other CPU %: median CPU of everything else on the machine meanwhile, "
          f"in % of one core;\n the machine has {os.cpu_count()}. High values mean a noisy run.)")
    verdict = "meets" if bitswap.best >= TARGET_MBPS else "BELOW"
    print(f"target: Bitswap >= {TARGET_MBPS:.0f} MB/s: {bitswap.best:.1f} MB/s ({verdict}); "
          f"Bitswap/raw = {bitswap.best / raw.best:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=64,
                        help="file size in MiB (default 64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of raw + Bitswap transfers (default 3)")
    parser.add_argument("--cli-repeats", type=int, default=2,
                        help="rounds of whole-process `p2pmr cat` (default 2; 0 to skip)")
    parser.add_argument("--raw-write-kib", type=int, default=256,
                        help="write size of the raw-stream server (default 256, one block)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a transfer may take before it counts as failed")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="parent of the temporary directory (default: the system's"
                        " temporary directory)")
    parser.add_argument("--profile", action="store_true",
                        help="one extra transfer with both processes under cProfile")
    parser.add_argument("--profile-top", type=int, default=25)
    # Internal: the roles of child processes.
    parser.add_argument("--child", choices=("raw-server", "raw-client", "fetch"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-addr", help=argparse.SUPPRESS)
    parser.add_argument("--child-repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-cid", help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-remote-pid", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    args.scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-bitswap-", dir=args.scratch))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
