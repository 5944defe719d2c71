"""Helpers for tests that run real peer processes on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from p2pmr.errors import NodeError
from p2pmr.ready import peer_command, start_peer_blocking
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.flatfs import FlatFSStore

ROOT = Path(__file__).resolve().parent.parent
GUTENBERG = ROOT / "examples" / "data" / "gutenberg"


def gutenberg_files() -> list[Path]:
    return sorted(GUTENBERG.glob("pg-*.txt"))


def copy_into(directory: Path, files: Sequence[Path]) -> Path:
    """A fresh input directory holding copies of ``files``."""
    directory.mkdir()
    for path in files:
        (directory / path.name).write_bytes(path.read_bytes())
    return directory


def random_bytes(n: int, seed: int | None = None) -> bytes:
    return random.Random(n if seed is None else seed).randbytes(n)


class PeerProcess:
    """A ``p2pmr peer`` child process; its stdout tells its addresses."""

    def __init__(self, repo: Path, args: Sequence[str] = (), *, timeout: float = 60.0,
                 env: dict[str, str] | None = None, chaos: str | None = None,
                 cgroup: Path | None = None) -> None:
        self.repo = repo
        script = Path(__file__).parent / "chaos_peer.py" if chaos is not None else None
        command = peer_command(repo, args, script=script)
        if chaos is not None:  # a deliberately misbehaving peer (tests/chaos_peer.py)
            command.insert(2, chaos)

        def enter_cgroup() -> None:  # in the child, before it runs anything
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        self.stderr_lines: list[str] = []
        try:
            self.proc, ready = start_peer_blocking(
                command, timeout=timeout, env=env, stderr=subprocess.PIPE,
                preexec=enter_cgroup if cgroup is not None else None,
                started=lambda proc: threading.Thread(target=self._drain_stderr, args=(proc,),
                                                      daemon=True).start())
        except NodeError as exc:
            raise RuntimeError(f"{exc}: {self.stderr}") from None
        self.peer_id = ready.peer_id
        self.addrs = list(ready.addrs)
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr_lines.append(line)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines[-50:])

    @property
    def addr(self) -> str:
        return self.addrs[0]

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def run_cli(*args: str, input: bytes | None = None, timeout: float = 120.0,
            check: bool = True, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m p2pmr ARGS`` and return the completed process."""
    result = subprocess.run([sys.executable, "-m", "p2pmr", *args], input=input,
                            capture_output=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"p2pmr {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


def forge_output(repo: Path, output: str, change: str) -> str:
    """The output with one claim changed, stored in ``repo``; its CID."""

    async def forge() -> CID:
        store = FlatFSStore(repo)
        entries = {e.name: e.cid for e in await unixfs.list_directory(store, CID.parse(output))}
        if change == "part":  # another part-00000, same manifest and record
            fake = await unixfs.add_bytes(store, b"forged\t1\n")
            entries["part-00000"] = fake
        else:  # the record claims another output for map task 0
            record = json.loads(await unixfs.read_range(store, entries["_provenance.json"]))
            first = next(t for t in record["tasks"] if t["phase"] == "map")
            first["output"]["partitions"][0] = str(await unixfs.add_bytes(store, b"a lie"))
            data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
            entries["_provenance.json"] = await unixfs.add_bytes(store, data)
        links = [(name, cid, 0) for name, cid in entries.items()]
        root, block, _ = unixfs.build_directory(links)
        await store.put(root, block)
        return root

    return str(trio.run(forge))


def load_lab() -> Any:
    """scripts/swarm_lab.py as a module: its network (namespaces, links) for tests."""
    spec = importlib.util.spec_from_file_location("swarm_lab", ROOT / "scripts" / "swarm_lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["swarm_lab"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
