"""A peer's limits and policy. The defaults suit a volunteer machine."""

from __future__ import annotations

from dataclasses import dataclass, field

from .._worker import WorkerLimits
from ..settings import setting

__all__ = ["PeerConfig", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may really use, which is what sizes worker pools.

    ``os.cpu_count()`` reports the host's cores: in a container limited to
    two CPUs on a 64-core host it would start 64 worker processes, each
    spawning a fresh interpreter. loky's count honours CPU affinity and
    cgroup (v1 and v2) quotas.
    """
    from loky import cpu_count

    return max(1, int(cpu_count()))


@dataclass(frozen=True)
class PeerConfig:
    """Limits and policy for a peer. Defaults suit a volunteer machine."""

    workers: int = setting(default_factory=usable_cpus, flag="--workers", help=(
        "Tasks run at once, each in its own process [default: the usable CPUs]."))
    allow_pickle: bool = setting(False, flag="--allow-pickle", help=(
        "Accept the pickle data encoding (unpickles data from other peers)."))
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    max_frame_size: int = 1024 * 1024
    max_code_size: int = 16 * 1024 * 1024
    max_input_size: int = setting(
        16 * 1024**3, flag="--max-task-input", metavar="MIB", scale=1024**2, help=(
            "Bytes one task may fetch, all its inputs together. Reduce tasks stream "
            "their inputs, so this bounds the disk a task fills, not its memory."))
    max_tasks_per_master: int = 64               # concurrent tasks per master
    max_streams_per_peer: int = 16               # concurrent protocol streams per remote peer
    max_streams: int = 256                       # concurrent protocol streams in all
    task_wall_seconds: float = setting(3600.0, flag="--max-task-time", metavar="SECONDS",
                                       help="Wall-clock limit per task.")
    first_frame_timeout: float = 10.0
    fetch_timeout: float = setting(60.0, flag="--fetch-timeout", metavar="SECONDS", help=(
        "How long to wait for a task's input from the swarm."))
    read_stores: tuple[str, ...] = setting((), flag="--read-store", metavar="REPO", help=(
        "Also read blocks from this other repo's block store on this machine, in place "
        "and read only, before asking the swarm (repeatable). `p2pmr run --local-peers` "
        "gives its peers the master's repo."))
