"""Worker processes: where a peer runs user code, so its event loop keeps answering.

:class:`ProcessWorkers` is the real pool: spawned interpreters with CPU and
memory limits (:mod:`p2pmr._worker`), started with the peer. A worker that
dies takes down nothing but itself; why it died is worked out here,
including the kernel's out-of-memory killer, which is a memory limit like
any other (its memory cgroup, v1 or v2, counted an OOM kill while the task
ran). :mod:`p2pmr.testing` has a pool that runs tasks in threads.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio
import trio_parallel

from .. import _worker
from .._worker import WorkerLimits
from ..job import STABLE_HASH_ENV
from ..wire.codes import ErrorCode

__all__ = ["ProcessWorkers", "WorkerDied", "WorkerPool"]

R = TypeVar("R")


class WorkerDied(Exception):
    """The worker running a task died; ``code`` says what that means."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkerPool(Protocol):
    """Runs one function call at a time per worker; cancelling kills the call."""

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the workers until cancelled; report started once they are up."""
        ...

    async def run(self, fn: Callable[[Any], R], request: Any) -> R:
        """``fn(request)`` in a worker; raises :class:`WorkerDied`."""
        ...


class ProcessWorkers:
    """A pool of spawned worker processes with the peer's limits."""

    def __init__(self, workers: int, limits: WorkerLimits) -> None:
        self.workers = max(1, workers)
        self.limits = limits
        self._ctx: Any = None
        self.deaths = 0

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the worker processes for the node's lifetime.

        Workers start with a fixed hash seed (set in this process's
        environment, which they inherit): user code that iterates over a set
        then yields the same records on every attempt and every peer.
        """
        os.environ.update(STABLE_HASH_ENV)
        init = functools.partial(_worker.init_worker, self.limits)
        async with trio_parallel.open_worker_context(
                idle_timeout=600, init=init, retire=_worker.should_retire,
                grace_period=5, worker_type=trio_parallel.WorkerType.SPAWN) as ctx:
            self._ctx = ctx
            # Start the worker processes now rather than on the first task.
            async with trio.open_nursery() as nursery:
                for _ in range(self.workers):
                    nursery.start_soon(ctx.run_sync, _worker.worker_pid)
            task_status.started()
            await trio.sleep_forever()

    async def run(self, fn: Callable[[Any], R], request: Any) -> R:
        assert self._ctx is not None, "the pool is not serving"
        oom_kills = _cgroup_oom_kills()
        try:
            result: R = await self._ctx.run_sync(fn, request, kill_on_cancel=True)
            return result
        except trio_parallel.BrokenWorkerError as exc:
            self.deaths += 1
            after = _cgroup_oom_kills()
            oom = oom_kills is not None and after is not None and after > oom_kills
            code, message = _death_reason(exc, oom_killed=oom, limits=self.limits)
            raise WorkerDied(code, message) from None


def _memory_cgroup() -> tuple[Path, Path] | None:
    """This process's memory cgroup: (its OOM-kill counter, its limit), v2 or v1."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:  # cgroup v2
            files = ("memory.events", "memory.max")
            bases = [Path("/sys/fs/cgroup") / path.lstrip("/"), Path("/sys/fs/cgroup")]
        elif "memory" in controllers.split(","):  # cgroup v1
            files = ("memory.oom_control", "memory.limit_in_bytes")
            bases = [Path("/sys/fs/cgroup/memory") / path.lstrip("/"),
                     Path("/sys/fs/cgroup/memory")]
        else:
            continue
        for base in bases:
            if (base / files[0]).exists():
                return base / files[0], base / files[1]
    return None


_MEMORY_CGROUP = _memory_cgroup()


def _cgroup_oom_kills() -> int | None:
    """How often the kernel's OOM killer has struck in our memory cgroup, if known."""
    if _MEMORY_CGROUP is None:
        return None
    try:
        for line in _MEMORY_CGROUP[0].read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _cgroup_memory_limit() -> str:
    if _MEMORY_CGROUP is not None:
        try:
            value = _MEMORY_CGROUP[1].read_text().strip()
            if value.isdigit() and int(value) < 2**60:
                return f" of {int(value) // 2**20} MiB"
        except OSError:
            pass
    return ""


def _death_reason(exc: BaseException, *, oom_killed: bool = False,
                  limits: WorkerLimits | None = None) -> tuple[ErrorCode, str]:
    proc = exc.args[1] if len(exc.args) > 1 else None
    code = getattr(proc, "exitcode", None)
    if code == -signal.SIGXCPU:
        return ErrorCode.LIMIT_EXCEEDED, "the worker process exceeded its CPU time limit"
    if code == -signal.SIGKILL and oom_killed:
        own = f"{limits.memory_bytes // 2**20} MiB" if limits and limits.memory_bytes else "none"
        return ErrorCode.LIMIT_EXCEEDED, (
            f"the kernel's out-of-memory killer ended the worker process: the peer's memory "
            f"(its cgroup's limit{_cgroup_memory_limit()}) ran out before the worker's own "
            f"limit (--max-task-memory: {own}). Ways out: give the peer more memory, set "
            f"--max-task-memory below what it has (then the task fails cleanly), use more "
            f"reducers, or add a combine function")
    if code == -signal.SIGKILL:
        return ErrorCode.WORKER_DIED, "the worker process was killed (SIGKILL; out of memory?)"
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return ErrorCode.WORKER_DIED, f"the worker process died of signal {name}"
    return ErrorCode.WORKER_DIED, f"the worker process exited unexpectedly (exit code {code})"
