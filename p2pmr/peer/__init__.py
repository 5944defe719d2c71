"""The peer: executes map and reduce tasks that trusted masters send it.

:func:`register_protocol` installs the ``/ipfs/mapreduce/1.0.0`` handler on
a node. As in rust-libp2p, the protocol is split in three: the policy
(:mod:`.service`: trust, limits, workers), the per-stream handling
(:mod:`.handler`, which runs tasks through :mod:`.tasks` on the worker
processes of :mod:`.workers`), and the wire format (:mod:`p2pmr.wire`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import PeerConfig, usable_cpus

__all__ = ["TRUST_FILE", "Faults", "PeerConfig", "PeerService", "Trust", "register_protocol",
           "usable_cpus"]

# Imported when first used: the config alone (for the command line's help,
# and for sizing local peers) must not bring in libp2p with it.
_WHERE = {"Faults": "faults", "PeerService": "service", "register_protocol": "service",
          "TRUST_FILE": "trust", "Trust": "trust"}

if TYPE_CHECKING:
    from .faults import Faults
    from .service import PeerService, register_protocol
    from .trust import TRUST_FILE, Trust


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
