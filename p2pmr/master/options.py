"""A job's deadlines and policy: every network wait has a deadline."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..scheduler import Policy
from ..storage.cid import CID

__all__ = ["MasterOptions"]


@dataclass(frozen=True)
class MasterOptions:
    """Deadlines and policy for a job. Every network wait has a deadline."""

    heartbeat_interval: float = 0.5   # peers send Progress this often
    peer_timeout: float = 5.0         # silence after which a peer counts as dead
    task_timeout: float | None = None  # per attempt; None: 60 s + 10x the typical task
    connect_timeout: float = 10.0
    fetch_timeout: float = 60.0
    input_timeout: float = 30.0       # resolving the input CID
    wait_for_workers: float = 120.0   # how long to wait with no usable worker
    encoding: str = "msgpack"
    cid_version: int = 0
    boundary_group: int = 128         # splits per boundary task
    verify: int = 1                   # run each task on this many peers; outputs must agree
    journal: bool = True
    resume: bool = False
    resume_job: CID | None = None     # resume this journaled job (default: find a match)
    policy: Policy = field(default_factory=Policy)
