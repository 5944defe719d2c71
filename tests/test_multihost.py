"""Peers on other hosts: the master and each peer in a network namespace of
its own (the swarm lab's network), so that 127.0.0.1 is a different machine
for each of them, as it is across real hosts."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pmr.ready import parse_ready, peer_command

from .helpers import gutenberg_files, load_lab

ROOT = Path(__file__).resolve().parent.parent
WORDCOUNT = ROOT / "examples" / "wordcount.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


_PROBE = """
import json, sys, tempfile, trio
from p2pmr.node import open_node, parse_peer_addr

async def main():
    peer, _ = parse_peer_addr(sys.argv[1])
    async with open_node(tempfile.mkdtemp(), listen=["/ip4/0.0.0.0/tcp/0"],
                         bootstrap=[sys.argv[1]]) as node:
        with trio.fail_after(10):
            while not node.host.get_peerstore().addrs(peer):
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # identify has replaced the dialled address
        print(json.dumps([str(a) for a in node.host.get_peerstore().addrs(peer)]))

trio.run(main)
"""


def test_a_node_tells_each_peer_only_addresses_it_can_reach(tmp_path: Path) -> None:
    """A node listening on 0.0.0.0 tells a peer on another host its network
    address, not 127.0.0.1 nor the wildcard (which, dialled there, reach the
    peer's own host); and prints that address as the one for other machines."""
    m = load_lab()
    net = m.Network(f"{os.getpid()}a", tmp_path / "delays.json", False)
    server: subprocess.Popen[str] | None = None
    try:
        a, b = net.add("a", 0, m.Link(1000.0, 0.0)), net.add("b", 1, m.Link(1000.0, 0.0))
        server = subprocess.Popen(
            ["ip", "netns", "exec", a.name, *peer_command(
                tmp_path / "a", ["--listen", "/ip4/0.0.0.0/tcp/4010", "--workers", "1"])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        assert server.stdout is not None
        lines = []
        while (ready := parse_ready(line := server.stdout.readline())) is None:
            assert line, "the peer exited before it was ready"
            lines.append(line.strip())
        # Both interfaces of its namespace, loopback first (local tools take the first).
        assert ready.addrs[0].startswith("/ip4/127.0.0.1/tcp/4010/")
        assert any(x.startswith(f"/ip4/{a.ip}/tcp/4010/") for x in ready.addrs)
        assert not any("/0.0.0.0/" in x for x in ready.addrs)
        remote = lines[lines.index("Other machines can reach this peer at:") + 1:]
        assert remote[0] == f"/ip4/{a.ip}/tcp/4010/p2p/{ready.peer_id}"
        assert not any("127.0.0.1" in x for x in remote if x.startswith("/"))
        probe = subprocess.run(
            ["ip", "netns", "exec", b.name, sys.executable, "-c", _PROBE,
             f"/ip4/{a.ip}/tcp/4010/p2p/{ready.peer_id}"],
            capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert json.loads(probe.stdout) == [f"/ip4/{a.ip}/tcp/4010"]
    finally:
        if server is not None:
            os.killpg(server.pid, 9)
            server.wait(10)
        net.close()


def test_peers_on_other_hosts_rejoin_a_restarted_master(tmp_path: Path) -> None:
    """Killed and restarted, a master on another host is found again within
    seconds, and a second job runs on the same peers. The restarted master
    listens only on a port the peers never were told to dial but learned
    while connected, so they find it through what it advertised."""
    m = load_lab()
    net = m.Network(f"{os.getpid()}h", tmp_path / "delays.json", False)
    peers: list[subprocess.Popen[bytes]] = []
    try:
        master = net.add("m", 0, m.Link(1000.0, 0.0))
        master_id = subprocess.run(
            [sys.executable, "-m", "p2pmr", "id", "--repo", str(tmp_path / "master")],
            capture_output=True, text=True, check=True).stdout.split()[0]
        for i in (1, 2):
            node = net.add(f"p{i}", i, m.Link(1000.0, 0.0))
            peers.append(subprocess.Popen(
                ["ip", "netns", "exec", node.name, *peer_command(tmp_path / f"peer-{i}", [
                    "--listen", "/ip4/0.0.0.0/tcp/4006",
                    "--bootstrap", f"/ip4/{master.ip}/tcp/4005/p2p/{master_id}",
                    "--trust", master_id, "--workers", "1", "--log-level", "INFO"])],
                stdout=subprocess.DEVNULL, stderr=(tmp_path / f"peer-{i}.log").open("w"),
                start_new_session=True))
        data = gutenberg_files()[0]

        def run_job(kill_after: float | None = None, ports: tuple[int, ...] = (4005, 4007),
                    wait: int = 20) -> subprocess.CompletedProcess[str] | None:
            listen = [a for port in ports for a in ("--listen", f"/ip4/0.0.0.0/tcp/{port}")]
            command = ["ip", "netns", "exec", master.name, sys.executable, "-m", "p2pmr",
                       "run", "--repo", str(tmp_path / "master"), str(WORDCOUNT), "--input",
                       str(data), *listen, "--no-progress", "--wait-for-workers", str(wait),
                       "--fresh", "--split-size", "0", "--min-peers", "2"]
            if kill_after is None:
                return subprocess.run(command, capture_output=True, text=True, timeout=120)
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(kill_after)
            os.killpg(proc.pid, 9)
            proc.wait(30)
            return None

        first = run_job()
        assert first is not None and first.returncode == 0, first.stderr[-2000:]
        run_job(kill_after=1.5)  # a master that dies mid-job
        # Restarted on 4007 alone, the peers' bootstrap port (4005) refuses:
        # --min-peers 2 within --wait-for-workers 8 means both came back
        # through the address they learned, within seconds.
        second = run_job(ports=(4007,), wait=8)
        assert second is not None and second.returncode == 0, second.stderr[-2000:]
        assert second.stdout.split()[-1] == first.stdout.split()[-1]  # same job, same output
        assert second.stderr.count(" joined") >= 2
        for i in (1, 2):
            log = (tmp_path / f"peer-{i}.log").read_text()
            assert f"connected to /ip4/{master.ip}/tcp/4007/p2p/{master_id}" in log, log[-3000:]
            assert "127.0.0.1" not in log.split("connected to", 1)[1], log[-3000:]
    finally:
        for proc in peers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)
        net.close()
