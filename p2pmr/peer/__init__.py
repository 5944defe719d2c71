"""The peer: executes map and reduce tasks that trusted masters send it.

:func:`register_protocol` installs the ``/ipfs/mapreduce/1.0.0`` handler on
a node. As in rust-libp2p, the protocol is split in three: the policy
(:mod:`.service`: trust, limits, workers), the per-stream handling
(:mod:`.handler`, which runs tasks through :mod:`.tasks` on the worker
processes of :mod:`.workers`), and the wire format (:mod:`p2pmr.wire`).
"""

from .config import PeerConfig, usable_cpus
from .faults import Faults
from .service import PeerService, register_protocol
from .trust import TRUST_FILE, Trust

__all__ = ["TRUST_FILE", "Faults", "PeerConfig", "PeerService", "Trust", "register_protocol",
           "usable_cpus"]
