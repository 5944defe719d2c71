"""Peers on other hosts: the master and each peer in a network namespace of
its own (the swarm lab's network), so that 127.0.0.1 is a different machine
for each of them, as it is across real hosts."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import gutenberg_files, load_lab

ROOT = Path(__file__).resolve().parent.parent
WORDCOUNT = ROOT / "examples" / "wordcount.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def test_peers_on_other_hosts_rejoin_a_restarted_master(tmp_path: Path) -> None:
    """The master listens on every interface, so it also advertises addresses
    that mean another machine to its peers. Killed and restarted, it is
    found again through the peers' bootstrap address within seconds, and a
    second job runs on them."""
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
                ["ip", "netns", "exec", node.name, sys.executable, "-m", "p2pmr", "peer",
                 "--repo", str(tmp_path / f"peer-{i}"), "--listen", "/ip4/0.0.0.0/tcp/4006",
                 "--bootstrap", f"/ip4/{master.ip}/tcp/4005/p2p/{master_id}",
                 "--trust", master_id, "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        data = gutenberg_files()[0]

        def run_job(kill_after: float | None = None) -> subprocess.CompletedProcess[str] | None:
            command = ["ip", "netns", "exec", master.name, sys.executable, "-m", "p2pmr",
                       "run", "--repo", str(tmp_path / "master"), str(WORDCOUNT), "--input",
                       str(data), "--listen", "/ip4/0.0.0.0/tcp/4005", "--no-progress",
                       "--wait-for-workers", "20", "--fresh", "--split-size", "0",
                       "--min-peers", "2"]
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
        # --min-peers 2 within --wait-for-workers 20: both peers must be back.
        second = run_job()
        assert second is not None and second.returncode == 0, second.stderr[-2000:]
        assert second.stdout.split()[-1] == first.stdout.split()[-1]  # same job, same output
        assert second.stderr.count(" joined") >= 2
    finally:
        for proc in peers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(10)
        net.close()
