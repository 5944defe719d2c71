"""How a master shares out work and judges its peers: every knob in one place."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Policy"]


@dataclass(frozen=True)
class Policy:
    min_batch: int = 1
    max_batch: int = 8
    exclude_after: int = 3        # consecutive peer failures before exclusion
    max_user_errors: int = 3      # a task whose code raised this often fails the job
    max_task_failures: int = 25   # other failures of one task before the job fails
    max_input_failures: int = 3   # attempts that could not fetch the input
    backups: bool = True
    backup_factor: float = 2.5    # back up tasks running this many medians…
    backup_min_age: float = 3.0   # …and at least this many seconds, unless…
    slow_peer_factor: float = 4.0  # …their peer's tasks take this many medians
    max_attempts_running: int = 2  # per task, including the original
    verify: int = 1               # identical results from this many distinct peers
    # Exclude a peer whose failures are this unlikely under the swarm's failure
    # rate (one-sided binomial test), once it has at least this many, fails at
    # least this share of its attempts, and this many times the swarm's share.
    # Strict, because every check is another chance of a false alarm: in
    # simulation a swarm whose workers all die a third of the time loses a
    # peer in about one job of 300; one peer that fails everything is out
    # after 5 to 8 failures.
    exclude_significance: float = 1e-6
    exclude_min_failures: int = 5
    exclude_min_rate: float = 0.5
    exclude_rate_factor: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError("need 1 <= min_batch <= max_batch")
        if self.verify < 1:
            raise ValueError("verify must be at least 1")
