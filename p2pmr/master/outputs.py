"""What a completed task produced, as the master keeps it (and journals it).

A map task: one partition CID per reducer, its counts, for a split the
edge fragments that boundary tasks need, and who holds the partitions
(spec section 7: they stay on the peers that made them). A reduce task: its part file.
Everything here is named by CID, so it is also what verification compares.
The journal (:mod:`.journal`) writes them as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from ..records import BlockEdges
from ..storage.cid import CID

if TYPE_CHECKING:  # light to import: `p2pmr status` and `p2pmr run` read journals before libp2p
    from libp2p.peer.id import ID as PeerID

__all__ = ["MapOutput", "Output", "ReduceOutput", "signature"]


@dataclass
class MapOutput:
    partitions: list[CID | None]
    partition_records: list[int]
    records_in: int
    records_out: int
    edges: BlockEdges | None = None
    head: bytes | None = None
    tail: bytes | None = None
    timings: dict[str, float] = field(default_factory=dict)  # not journaled
    # Where the partitions are: the peers that computed them (and kept them),
    # and whether the master holds them too (sent inline, or replicated).
    holders: list[PeerID] = field(default_factory=list)
    local: bool = False

    def needed(self) -> bool:
        """Has any partition a reducer must fetch?"""
        return any(cid is not None for cid in self.partitions)


@dataclass
class ReduceOutput:
    cid: CID
    records_in: int
    keys: int
    records_out: int
    size: int
    timings: dict[str, float] = field(default_factory=dict)  # not journaled


Output: TypeAlias = MapOutput | ReduceOutput


def signature(output: Output) -> Any:
    """What two correct runs of a task must agree on, byte for byte."""
    if isinstance(output, ReduceOutput):
        return ("reduce", output.cid)
    edges = output.edges
    return ("map", tuple(output.partitions), tuple(output.partition_records),
            (edges.head, edges.tail, edges.no_newline) if edges else None,
            output.head, output.tail, output.records_in, output.records_out)
