"""The swarm lab (scripts/swarm_lab.py): peers in network namespaces of their
own, on shaped and delayed links. Each scenario checks the output against a
sequential run, and that the lab leaves no namespace, cgroup or process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import load_lab

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "scripts" / "swarm_lab.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def leftovers() -> dict[str, list[str]]:
    namespaces = [line.split()[0] for line in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines() if line]
    groups = [p.name for p in Path("/sys/fs/cgroup/cpu").glob("p2lab-*")]
    relays = subprocess.run(["pgrep", "-f", "lab_relay.py"], capture_output=True,
                            text=True).stdout.split()
    return {"namespaces": [n for n in namespaces if n.startswith("p2lab-")],
            "cgroups": groups, "relays": relays}


def run_lab(*args: str, timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(LAB), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    assert leftovers() == {"namespaces": [], "cgroups": [], "relays": []}
    return summary


def test_links_have_the_delay_and_rate_asked_for(tmp_path: Path) -> None:
    """Two nodes 30 ms and 20 ms from the bridge: a round trip takes 100 ms,
    and a 10 Mbit/s link carries about 1.25 MB/s."""
    lab = load_lab()
    net = lab.Network(f"{os.getpid()}t", tmp_path / "delays.json", True)
    try:
        a = net.add("a", 1, lab.Link(10.0, 30.0))
        b = net.add("b", 2, lab.Link(1000.0, 20.0))
        server = subprocess.Popen(
            ["ip", "netns", "exec", b.name, sys.executable, "-c", ECHO_SERVER, b.ip],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "up"
            out = subprocess.run(["ip", "netns", "exec", a.name, sys.executable, "-c",
                                  ECHO_CLIENT, b.ip], capture_output=True, text=True,
                                 timeout=60)
            rtt, rate = map(float, out.stdout.split())
        finally:
            server.kill()
            server.wait()
    finally:
        net.close()
    assert 0.095 <= rtt <= 0.2, rtt
    assert 0.8e6 <= rate <= 1.4e6, rate
    assert leftovers()["namespaces"] == []


ECHO_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 9100))
print("up", flush=True)
while True:
    c, _ = s.accept()
    while True:
        data = c.recv(65536)
        if not data:
            break
        if data.endswith(b"ping"):  # the blob before it may share its chunk
            c.sendall(b"pong")
    c.close()
"""

ECHO_CLIENT = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], 9100), timeout=30)
c.sendall(b"ping"); c.recv(4)  # the first exchange also opens the relay's connection
rtts = []
for _ in range(5):
    t = time.monotonic(); c.sendall(b"ping"); c.recv(4); rtts.append(time.monotonic() - t)
blob = b"x" * (4 * 2**20)
t = time.monotonic(); c.sendall(blob); c.sendall(b"ping"); c.recv(4)
print(min(rtts), len(blob) / (time.monotonic() - t))
"""


def test_a_small_lab_is_exact_and_leaves_nothing_behind() -> None:
    summary = run_lab("--peers", "3", "--delay", "10", "--rate", "50", "--size-mib", "2",
                      "--split-mib", "0", "--reducers", "2", "--timeout", "300")
    assert summary["exact"] is True
    assert summary["tasks"]["executed"] >= 8 + 2
    assert len(summary["peer_tasks"]) == 3  # every peer worked
    assert summary["master_bytes"]["tx_bytes"] > 2 * 2**20  # the input left the master
    assert all(t["rx_bytes"] > 0 for t in summary["peer_bytes"].values())


def test_the_lab_cleans_up_when_interrupted() -> None:
    with tempfile.TemporaryFile() as err:
        lab = subprocess.Popen([sys.executable, str(LAB), "--peers", "2", "--delay", "20",
                                "--size-mib", "8", "--rate", "2", "--slow", "1"], stderr=err,
                               stdout=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not leftovers()["cgroups"]:
            time.sleep(0.2)  # the swarm is up and its slow peer throttled: mid-job
        assert leftovers()["relays"] and lab.poll() is None
        lab.send_signal(signal.SIGINT)
        assert lab.wait(60) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(leftovers().values()):
        time.sleep(0.2)
    assert leftovers() == {"namespaces": [], "cgroups": [], "relays": []}


@pytest.mark.slow
def test_churn_finishes_exact() -> None:
    summary = run_lab("--peers", "6", "--delay", "10", "--rate", "50", "--size-mib", "16",
                      "--churn", "0.3", "--compare", "--timeout", "900", timeout=1800)
    assert summary["exact"] is True and summary["churned"] >= 1


@pytest.mark.slow
def test_hagoop_mix_of_bad_and_evil_peers_is_exact() -> None:
    summary = run_lab("--peers", "6", "--bad", "2", "--evil", "1", "--size-mib", "8",
                      "--delay", "5", "--peer-timeout", "3", timeout=1800)
    # Three good peers did the work: the bad left, the evil one's tasks ran elsewhere.
    assert summary["exact"] is True and 1 <= len(summary["peer_tasks"]) <= 3


@pytest.mark.slow
def test_a_liar_is_excluded_with_verify() -> None:
    summary = run_lab("--peers", "4", "--liars", "1", "--verify", "2", "--size-mib", "4",
                      timeout=1800)
    assert summary["exact"] is True and len(summary["excluded"]) == 1


@pytest.mark.slow
def test_master_killed_halfway_redoes_nothing() -> None:
    summary = run_lab("--peers", "4", "--delay", "10", "--size-mib", "8", "--split-mib", "0",
                      "--kill-master-at", "0.5", timeout=1800)
    assert summary["exact"] is True and summary["runs"] == 2
    assert summary["tasks"]["resumed"] >= summary["completed_before_kill"]



@pytest.mark.slow
def test_a_straggler_is_backed_up_and_the_output_exact() -> None:
    summary = run_lab("--peers", "4", "--slow", "1", "--size-mib", "16", timeout=1800)
    assert summary["exact"] is True and summary["throttled"] is True
    assert summary["redone"] >= 1  # its tasks ran again elsewhere
