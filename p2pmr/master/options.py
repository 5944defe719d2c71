"""A job's deadlines and policy: every network wait has a deadline."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..settings import setting
from ..storage.cid import CID
from .policy import Policy

__all__ = ["MasterOptions"]


@dataclass(frozen=True)
class MasterOptions:
    """Deadlines and policy for a job. Every network wait has a deadline."""

    heartbeat_interval: float = 0.5   # peers send Progress this often
    peer_timeout: float = setting(5.0, flag="--peer-timeout", metavar="SECONDS", help=(
        "Seconds of silence after which a peer counts as dead."))
    task_timeout: float | None = None  # per attempt; None: 60 s + 10x the typical task
    connect_timeout: float = 10.0
    fetch_timeout: float = 60.0
    input_timeout: float = 30.0       # resolving the input CID
    wait_for_workers: float = setting(120.0, flag="--wait-for-workers", metavar="SECONDS",
                                      help="Seconds to wait when no worker is available.")
    min_peers: int = setting(0, flag="--min-peers", low=0, metavar="N", help=(
        "Assign no task until N peers have joined (or --wait-for-workers has passed): a "
        "swarm starts the job together rather than the first peer taking the first tasks."))
    encoding: str = setting("msgpack", flag="--encoding", choices=("msgpack", "pickle"),
                            help="Data encoding between peers.")
    cid_version: int = setting(0, flag="--cid-version", low=0, high=1,
                               help="CID version of the blocks the job writes.")
    boundary_group: int = 128         # splits per boundary task
    locality_wait: float = setting(3.0, flag="--locality-wait", metavar="SECONDS", help=(
        "Seconds a peer with no split of its own waits before it takes one that "
        "another peer holds."))
    split_size: int = setting(
        4 * 1024**2, flag="--split-size", metavar="MIB", scale=1024**2, low=0, help=(
            "Average bytes of input per map task, in whole leaf blocks (0: one block each)."))
    verify: int = setting(1, flag="--verify", low=1, high=9, help=(
        "Run every task on this many peers and accept only identical outputs."))
    replicas: int = setting(1, flag="--replicas", low=1, high=2, help=(
        "Copies of each map output before its task counts as complete: 1, the "
        "producing peer's own (a lost one is recomputed); 2, the master keeps one too."))
    fresh: bool = setting(False, flag="--fresh", help=(
        "Run every task, taking nothing from the memo of earlier jobs (what runs is "
        "still recorded)."))
    no_backups: bool = setting(False, flag="--no-backups", help=(
        "Never start backup attempts of straggling tasks (to measure what they save)."))
    memo: bool = True                 # look tasks up in the repo's memo, and record them
    journal: bool = True
    resume: bool = False
    resume_job: CID | None = None     # resume this journaled job (default: find a match)
    policy: Policy = field(default_factory=Policy)
