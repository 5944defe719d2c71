"""The swarm lab: a p2pmr swarm on an emulated wide-area network, on one machine.

Every peer, and the master, runs in a network namespace of its own, on its
own address (10.77.0.0/16) behind one bridge (in a namespace of its own
too: nothing of the host's network is touched). Each node's link has a
bandwidth, shaped with ``tc tbf`` in both directions, and a one-way delay
(and, with ``--loss``, packet loss), added by ``netem`` where the kernel has
it and otherwise by a userspace relay in the node's namespace
(``lab_relay.py``; kernels here have no ``netem``, and loss needs it).
Peers can be CPU-limited (cgroups), misbehave (``tests/chaos_peer.py``:
bad peers exit at once, evil ones hang, liars lie), be killed mid-map, or
churn: replaced at random (a Poisson process) by new peers that bootstrap
to the swarm. The master can be killed halfway and resumed. The output is
checked against a sequential run of the job, and the last line printed is
a JSON summary.

    sudo python scripts/swarm_lab.py --peers 4 --delay 20 --rate 50 --size-mib 16
    sudo python scripts/swarm_lab.py --peers 8 --links 4x100:5,4x10:80 --churn 0.3 --compare

It needs root (namespaces, tc, nftables, cgroups). Whatever way it ends,
Ctrl-C included, it removes its namespaces, cgroups and processes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GUTENBERG = ROOT / "examples" / "data" / "gutenberg"
CHAOS = ROOT / "tests" / "chaos_peer.py"
RELAY = Path(__file__).resolve().parent / "lab_relay.py"
RELAY_PORT, RELAY_MARK, P2P_PORT = 7000, 1, 4001
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
PY = sys.executable


def sh(*args: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


# -- the network ------------------------------------------------------------------------


@dataclass
class Link:
    rate: float   # Mbit/s, each way
    delay: float  # ms, one way, of this access link
    loss: float = 0.0  # percent of packets lost each way (needs netem)


@dataclass
class NodeNet:
    name: str  # the namespace
    ip: str
    link: Link
    relay: subprocess.Popen[str] | None = None


def parse_links(spec: str | None, peers: int, rate: float, delay: float,
                loss: float = 0.0) -> list[Link]:
    """``4x100:5,4x10:80``: four peers at 100 Mbit/s and 5 ms, four at 10 and 80."""
    if not spec:
        return [Link(rate, delay, loss) for _ in range(peers)]
    links: list[Link] = []
    for part in spec.split(","):
        count, _, shape = part.partition("x")
        mbit, _, ms = shape.partition(":")
        links += [Link(float(mbit), float(ms or 0), loss) for _ in range(int(count))]
    if len(links) < peers:  # the pattern repeats
        links = [links[i % len(links)] for i in range(peers)]
    return links[:peers]


class Network:
    """Namespaces, a bridge, shaped links and delaying relays; removed by :meth:`close`."""

    def __init__(self, tag: str, delays_file: Path, delayed: bool) -> None:
        self.tag = tag
        self.delays_file = delays_file
        self.hub = f"p2lab-{tag}-hub"
        self.nodes: list[NodeNet] = []
        self._made: list[str] = []
        sh("ip", "netns", "add", self.hub)
        self._made.append(self.hub)
        try:
            sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", "br0", "up")
            self.netem = netem_works(self.hub)
        except BaseException:
            self.close()
            raise
        # Any link with a delay, and no netem: every node gets a delaying relay.
        self.delayed = delayed and not self.netem

    def add(self, label: str, index: int, link: Link) -> NodeNet:
        name = f"p2lab-{self.tag}-{label}"
        ip = f"10.77.{index // 250}.{index % 250 + 1}"
        inner, outer = f"li{self.tag}{index}"[:15], f"lo{self.tag}{index}"[:15]
        sh("ip", "netns", "add", name)
        self._made.append(name)
        sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
        sh("ip", "link", "set", inner, "netns", name)
        sh("ip", "link", "set", outer, "netns", self.hub)
        sh("ip", "-n", name, "link", "set", inner, "name", "eth0")
        sh("ip", "-n", name, "addr", "add", f"{ip}/16", "dev", "eth0")
        for dev in ("eth0", "lo"):
            sh("ip", "-n", name, "link", "set", dev, "up")
        sh("ip", "-n", self.hub, "link", "set", outer, "master", "br0", "up")
        node = NodeNet(name, ip, link)
        burst = max(16 * 1024, int(link.rate * 1e6 / 8 / 100))
        for ns, dev in ((name, "eth0"), (self.hub, outer)):
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev]
            shape = ["tbf", "rate", f"{link.rate}mbit", "burst", str(burst), "latency", "400ms"]
            if self.netem and (link.delay or link.loss):
                # Each way: this link's delay and loss, then its bandwidth.
                sh(*tc, "root", "handle", "1:", "netem", "delay", f"{link.delay}ms",
                   "loss", f"{link.loss}%")
                sh(*tc, "parent", "1:1", "handle", "10:", *shape)
            else:
                sh(*tc, "root", *shape)
        self.nodes.append(node)
        if self.delayed:
            self._start_relay(node)
        return node

    def _start_relay(self, node: NodeNet) -> None:
        """Delay every TCP connection the node opens to the lab's network."""
        delays = {n.ip: n.link.delay for n in self.nodes}
        temporary = self.delays_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(delays))
        os.replace(temporary, self.delays_file)  # relays read it per connection
        sh("ip", "netns", "exec", node.name, "nft", "-f", "-", input=(
            "table ip lab {\n chain out {\n  type nat hook output priority -100;\n"
            f"  meta mark {RELAY_MARK} return\n"
            f"  ip daddr 10.77.0.0/16 tcp dport != {RELAY_PORT} redirect to :{RELAY_PORT}\n"
            " }\n}\n"))
        node.relay = subprocess.Popen(
            ["ip", "netns", "exec", node.name, PY, str(RELAY), "--port", str(RELAY_PORT),
             "--mark", str(RELAY_MARK), "--me", node.ip, "--delays", str(self.delays_file)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert node.relay.stdout is not None
        if node.relay.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the relay in {node.name} did not start")

    def traffic(self, node: NodeNet) -> dict[str, int]:
        out = {}
        for what in ("tx_bytes", "rx_bytes"):
            text = sh("ip", "netns", "exec", node.name, "cat",
                      f"/sys/class/net/eth0/statistics/{what}", check=False)
            out[what] = int(text.strip() or 0)
        return out

    def close(self) -> None:
        for node in self.nodes:
            if node.relay is not None:
                stop(node.relay)
        for name in reversed(self._made):
            sh("ip", "netns", "del", name, check=False)
        self._made.clear()


def netem_works(namespace: str) -> bool:
    """Whether this kernel has ``netem`` (many have it as a module; some, none):
    tried on the loopback of a namespace of the lab's, and taken off again."""
    tc = ["ip", "netns", "exec", namespace, "tc", "qdisc"]
    works = subprocess.run([*tc, "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True, timeout=30).returncode == 0
    if works:
        sh(*tc, "del", "dev", "lo", "root", check=False)
    return works


def stale_namespaces() -> list[str]:
    """Namespaces left by labs whose process is gone (a SIGKILLed lab cannot clean)."""
    names = [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line]
    stale = []
    for name in names:
        if name.startswith("p2lab-"):
            pid = name.split("-")[1].rstrip("abcdefghijklmnopqrstuvwxyz")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                stale.append(name)
    return stale


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# -- the job and its oracle --------------------------------------------------------------


def make_input(directory: Path, size_mib: float, corpus: Path) -> Path:
    """A file of ``size_mib`` MiB of the corpus's texts, repeated."""
    texts = [p.read_bytes() for p in sorted(corpus.glob("*.txt"))]
    if not texts:
        raise SystemExit(f"no .txt files in {corpus}")
    path = directory / "input.txt"
    want = int(size_mib * 2**20)
    with open(path, "wb") as out:
        written, i = 0, 0
        while written < want:
            piece = texts[i % len(texts)][: want - written]
            out.write(piece)
            written += len(piece)
            i += 1
    return path


def oracle(job_file: Path, data: Path) -> Counter[str]:
    """The job run sequentially in this process: its output lines, as a multiset."""
    spec = importlib.util.spec_from_file_location("lab_job", job_file)
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    keyed = getattr(job, "RECORD_KEYS", True)
    records = []
    offset = 0
    with open(data, "rb") as handle:
        for raw in handle:
            records.append(((data.name, offset) if keyed else None,
                            raw.decode("utf-8", "replace").rstrip("\n")))
            offset += len(raw)
    if hasattr(job, "map_batch"):
        pairs = list(job.map_batch(records))
    else:
        pairs = [p for key, line in records for p in job.map(key, line)]
    groups: dict[Any, list[Any]] = defaultdict(list)
    for key, value in pairs:
        groups[key].append(value)
    return Counter(f"{k}\t{v}" for key, values in groups.items()
                   for k, v in job.reduce(key, iter(values)))


def output_lines(directory: Path) -> Counter[str]:
    lines: Counter[str] = Counter()
    for part in sorted(directory.glob("part-*")):
        lines.update(part.read_text(encoding="utf-8").split("\n")[:-1])
    return lines


# -- one run ---------------------------------------------------------------------------


@dataclass
class Peer:
    net: NodeNet
    proc: subprocess.Popen[str]
    mode: str
    cpu: float | None = None  # a slow peer's CPU share, applied once the swarm is up
    traffic: dict[str, int] = field(default_factory=dict)


class Lab:
    """One job on the lab's network, with the behaviours asked for."""

    def __init__(self, args: argparse.Namespace, work: Path, tag: str, clean: bool) -> None:
        self.args = args
        self.work = work
        self.tag = tag
        self.clean = clean  # the baseline run: no churn, crashes, bad peers or slow peers
        self.rng = random.Random(args.seed)
        self.links = parse_links(args.links, args.peers, args.rate, args.delay, args.loss)
        delayed = args.master_delay > 0 or any(link.delay for link in self.links)
        self.net = Network(tag, work / "delays.json", delayed)
        self.cgroups: list[Path] = []
        self.peers: list[Peer] = []
        self.gone: list[Peer] = []
        self.master_repo = work / "master"
        try:
            if args.loss and not self.net.netem:
                raise SystemExit("--loss needs the kernel's netem, which this kernel lacks "
                                 "(`tc qdisc add ... netem` says the kind is unknown); "
                                 "delays work without it, through the lab's relays")
            self.master_net = self.net.add("m", 0, Link(args.master_rate, args.master_delay))
        except BaseException:
            self.net.close()
            raise
        self.next_index = 1
        self.notes: dict[str, Any] = {}

    def close(self) -> None:
        for peer in self.peers + self.gone:
            kill(peer.proc)
        for group in self.cgroups:  # removable once the processes killed in it are gone
            deadline = time.monotonic() + 10
            while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.net.close()

    # processes

    def _ns(self, net: NodeNet) -> list[str]:
        return ["ip", "netns", "exec", net.name]

    def _cgroup(self, quota: float) -> Path:
        if not CPU_CGROUP.is_dir():
            raise SystemExit("slow peers need the cgroup v1 cpu controller")
        group = CPU_CGROUP / f"p2lab-{self.tag}-{len(self.cgroups)}"
        group.mkdir()
        self.cgroups.append(group)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(100000 * quota))))
        return group

    def start_peer(self, mode: str = "good", cpu: float | None = None) -> Peer:
        index = self.next_index
        self.next_index += 1
        link = self.links[(index - 1) % len(self.links)]
        net = self.net.add(f"p{index}", index, link)
        repo = self.work / f"peer-{index}"
        listen = f"/ip4/{net.ip}/tcp/{P2P_PORT}"
        common = ["--repo", str(repo), "--bootstrap", self.master_addr, "--trust", self.master_id]
        if mode == "good":
            command = [PY, "-m", "p2pmr", "peer", *common, "--listen", listen, "--workers", "1"]
        else:
            command = [PY, str(CHAOS), mode, *common, "--listen", listen,
                       "--seed", str(index), "--rate", "1.0"]
        proc = subprocess.Popen([*self._ns(net), *command], stdout=subprocess.DEVNULL,
                                stderr=open(self.work / f"peer-{index}.log", "w"),  # noqa: SIM115
                                text=True, start_new_session=True,
                                env={**os.environ, "P2PMR_LOG_LEVEL": "WARNING"})
        peer = Peer(net, proc, mode, cpu=cpu)
        self.peers.append(peer)
        return peer

    def throttle(self) -> None:
        """Limit the slow peers' CPU, every process of theirs (peer and workers).

        Only once the swarm is up: a peer that boots ten times slower too
        would hold the job back (--min-peers) before it is given any task."""
        for peer in self.peers:
            if peer.cpu is None:
                continue
            group = self._cgroup(peer.cpu)
            for pid in sh("pgrep", "-g", str(peer.proc.pid), check=False).split():
                with contextlib.suppress(OSError):
                    (group / "cgroup.procs").write_text(pid)
            peer.cpu = None
        self.notes["throttled"] = True

    def retire(self, peer: Peer) -> None:
        peer.traffic = self.net.traffic(peer.net)
        kill(peer.proc)
        self.peers.remove(peer)
        self.gone.append(peer)

    def start_master(self, data: Path, resume: bool = False) -> subprocess.Popen[str]:
        a = self.args
        command = [*self._ns(self.master_net), PY, "-m", "p2pmr", "run", "--repo",
                   str(self.master_repo), "--listen", self.master_listen, "--no-progress",
                   "--output", str(self.work / "out"), "--overwrite",
                   "--peer-timeout", str(a.peer_timeout), "--split-size", str(a.split_mib),
                   # The job starts once the swarm is up, not with the first peer to boot.
                   "--min-peers", str(a.peers), "--wait-for-workers", "60"]
        command += ["--resume"] if resume else [str(a.job), "--input", str(data),
                                                "-R", str(a.reducers)]
        if a.verify > 1:
            command += ["--verify", str(a.verify)]
        if a.no_backups:
            command.append("--no-backups")
        return subprocess.Popen(command, stdout=subprocess.PIPE,
                                stderr=open(self.work / "master.log", "a"),
                                text=True, start_new_session=True,
                                env={**os.environ, "P2PMR_LOG_LEVEL": "INFO"})

    # the run

    def run(self, data: Path) -> dict[str, Any]:
        a = self.args
        self.master_listen = f"/ip4/{self.master_net.ip}/tcp/{P2P_PORT}"
        self.master_id = sh(PY, "-m", "p2pmr", "id", "--repo", str(self.master_repo)) \
            .split()[0]
        self.master_addr = f"{self.master_listen}/p2p/{self.master_id}"
        started = time.monotonic()
        master = self.start_master(data)
        modes = ["good"] * a.peers
        if not self.clean:
            bad = ["exit-now"] * a.bad + ["hang-after-accept"] * a.evil + ["liar"] * a.liars
            modes = bad + ["good"] * max(0, a.peers - len(bad))
        # A slow peer gets a tenth (--slowdown) of the CPU the others share.
        share = min(1.0, (os.cpu_count() or 1) / max(1, a.peers))
        for i, mode in enumerate(modes):
            slow = not self.clean and mode == "good" and i >= len(modes) - a.slow
            self.start_peer(mode, cpu=share / a.slowdown if slow else None)
        runs = 1
        output = self._watch(master, started, data)
        if output is None:  # the master was killed halfway: resume it
            runs += 1
            master = self.start_master(data, resume=True)
            output = self._watch(master, started, data, resumed=True)
        wall = time.monotonic() - started
        return self._summary(output, wall, runs)

    def _watch(self, master: subprocess.Popen[str], started: float, data: Path,
               resumed: bool = False) -> str | None:
        """Run the behaviours until the master exits; its output CID, or None if
        the lab killed it to resume."""
        a = self.args
        rate = 0.0 if self.clean else a.churn * a.peers / 60.0
        next_churn = time.monotonic() + (self.rng.expovariate(rate) if rate else math.inf)
        crashed = self.clean or a.crash <= 0
        throttled = not any(p.cpu for p in self.peers)
        while master.poll() is None:
            if not throttled and self._joined() >= a.peers:
                self.throttle()
                throttled = True
            if time.monotonic() - started > a.timeout:
                kill(master)
                raise SystemExit(f"the job did not finish in {a.timeout:g}s")
            done = self._map_progress()
            if not self.clean and not resumed and a.kill_master_at and \
                    done >= a.kill_master_at:
                kill(master)
                self.notes["master_killed_at"] = round(done, 3)
                self.notes["completed_before_kill"] = self._journal_done()
                return None
            if not crashed and done >= a.crash_at:
                victims = self.rng.sample(self.peers, max(1, round(a.crash * a.peers)))
                for victim in victims:
                    self.retire(victim)
                self.notes["crashed"] = len(victims)
                crashed = True
            if time.monotonic() >= next_churn:
                good = [p for p in self.peers if p.mode == "good"]
                if good:
                    self.retire(self.rng.choice(good))
                    self.start_peer()
                    self.notes["churned"] = self.notes.get("churned", 0) + 1
                next_churn = time.monotonic() + self.rng.expovariate(rate)
            time.sleep(0.2)
        out = master.stdout.read() if master.stdout else ""
        if master.returncode != 0:
            raise SystemExit(f"the master failed ({master.returncode}); see "
                             f"{self.work / 'master.log'}")
        return out.strip().splitlines()[-1]

    def _job_dir(self) -> Path | None:
        jobs = sorted((self.master_repo / "jobs").glob("*/journal"),
                      key=lambda p: p.stat().st_mtime)
        return jobs[-1].parent if jobs else None

    def _joined(self) -> int:
        directory = self._job_dir()
        if directory is None or not (directory / "events.jsonl").exists():
            return 0
        return (directory / "events.jsonl").read_text().count('"peer-joined"')

    def _map_progress(self) -> float:
        """The share of map tasks complete, from the journal (no network needed)."""
        directory = self._job_dir()
        if directory is None or not (directory / "events.jsonl").exists():
            return 0.0
        total = 0
        for line in (directory / "events.jsonl").read_text().splitlines():
            if '"job-planned"' in line:
                total = json.loads(line)["detail"]["map_tasks"]
        return self._journal_done("map") / total if total else 0.0

    def _journal_done(self, phase: str | None = None) -> int:
        directory = self._job_dir()
        if directory is None:
            return 0
        done = 0
        for line in (directory / "journal").read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("t") == "done" and phase in (None, record.get("phase")):
                    done += 1
        return done

    def _summary(self, output: str, wall: float, runs: int) -> dict[str, Any]:
        directory = self._job_dir()
        assert directory is not None
        report = json.loads((directory / "report.json").read_text())
        events = [json.loads(line) for line in
                  (directory / "events.jsonl").read_text().splitlines()]
        assigned = Counter((e["phase"], e["task"]) for e in events if e["kind"] == "assigned")
        planned = next(e["detail"] for e in reversed(events) if e["kind"] == "job-planned")
        maps = [e["time"] for e in events if e.get("phase") == "map"
                and e["kind"] in ("assigned", "completed")]
        per_peer = Counter(e["peer"] for e in events if e["kind"] == "completed")
        for peer in self.peers:
            peer.traffic = self.net.traffic(peer.net)
        return {
            "output": output, "wall_seconds": round(wall, 2), "runs": runs,
            "job_seconds": report["wall_seconds"], "tasks": report["tasks"],
            "input_bytes": planned["input_bytes"],
            "map_seconds": round(max(maps) - min(maps), 2) if maps else None,
            "redone": sum(assigned.values()) - len(assigned),
            "master_bytes": self.net.traffic(self.master_net),
            "peer_bytes": {p.net.ip: p.traffic for p in self.peers + self.gone},
            "peer_tasks": dict(per_peer),
            "excluded": sorted(k for k, v in report["peers"].items() if v.get("excluded")),
            **self.notes,
        }


# -- the command ---------------------------------------------------------------------------


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the lab as Ctrl-C does: through its clean-up."""
    def stop_lab(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, stop_lab) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def one_run(args: argparse.Namespace, data: Path, base: Path, clean: bool,
            expected: Counter[str]) -> dict[str, Any]:
    tag = f"{os.getpid()}{'c' if clean else 'r'}"
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    lab = Lab(args, work, tag, clean)
    try:
        result = lab.run(data)
    finally:
        lab.close()
    result["exact"] = output_lines(work / "out") == expected
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--peers", type=int, default=4)
    add("--delay", type=float, default=0.0, help="one-way delay of each peer's link, ms")
    add("--rate", type=float, default=100.0, help="each peer's link, Mbit/s each way")
    add("--links", default=None, help="heterogeneous links, e.g. 4x100:5,4x10:80")
    add("--loss", type=float, default=0.0, help="packet loss on peers' links, %% (netem)")
    add("--master-rate", type=float, default=1000.0)
    add("--master-delay", type=float, default=0.0)
    add("--size-mib", type=float, default=16.0)
    add("--split-mib", type=int, default=1, help="--split-size for the job (MiB)")
    add("--job", type=Path, default=ROOT / "examples" / "wordcount.py")
    add("--reducers", type=int, default=4)
    add("--corpus", type=Path, default=GUTENBERG)
    add("--churn", type=float, default=0.0, help="share of peers replaced per minute")
    add("--crash", type=float, default=0.0, help="share of peers killed mid-map")
    add("--crash-at", type=float, default=0.3, help="...when this share of maps is done")
    add("--slow", type=int, default=0,
        help="peers limited to 1/--slowdown of the CPU share each peer has")
    add("--slowdown", type=float, default=10.0)
    add("--bad", type=int, default=0, help="peers that exit when offered work")
    add("--evil", type=int, default=0, help="peers that accept work and hang")
    add("--liars", type=int, default=0, help="peers that return wrong map outputs")
    add("--verify", type=int, default=1)
    add("--no-backups", action="store_true")
    add("--kill-master-at", type=float, default=0.0, help="share of maps done, then resume")
    add("--peer-timeout", type=float, default=5.0)
    add("--compare", action="store_true", help="run a clean baseline first")
    add("--seed", type=int, default=1)
    add("--timeout", type=float, default=900.0)
    add("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the swarm lab needs root: network namespaces, tc, nftables, cgroups")
    for name in stale_namespaces():
        sh("ip", "netns", "del", name, check=False)
    base = Path(tempfile.mkdtemp(prefix="p2pmr-lab-"))
    try:
        with cleanup_on_signals():
            data = make_input(base, args.size_mib, args.corpus)
            expected = oracle(args.job, data)
            summary: dict[str, Any] = {"peers": args.peers, "size_mib": args.size_mib}
            if args.compare:
                clean = one_run(args, data, base, True, expected)
                summary["clean"] = clean
            result = one_run(args, data, base, False, expected)
            summary.update(result)
            if args.compare:
                summary["slowdown"] = round(result["wall_seconds"]
                                            / summary["clean"]["wall_seconds"], 3)
                summary["exact"] = result["exact"] and summary["clean"]["exact"]
    finally:
        if args.keep:
            print(f"work directory kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(summary))
    if not summary["exact"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
