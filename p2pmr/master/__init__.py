"""The master: plans a job, hands its tasks to peers, and assembles the output.

A master is any node. It stores the job's code and descriptor in IPFS,
resolves the input CID into map splits (one per leaf block), and then runs
two phases. Map tasks go to peers that speak ``/ipfs/mapreduce/1.0.0``;
boundary tasks map the lines that straddle blocks once the fragments on
both sides are known; then one reduce task per partition. The output is a
UnixFS directory of ``part-NNNNN`` files and a ``_manifest.json``.

Durability (spec section 7): the master fetches every completed task's
output into its own store *before* counting the task as complete, and
journals it. A map output is therefore never at risk when a peer dies, and
the final output stays retrievable from the master's repo alone.

:mod:`.core` holds the :class:`Master` and its run loop; the other modules
here are its parts, one job each.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["InitMaster", "Master", "MasterOptions"]

# Imported when first used: the options alone (for the command line's
# help) must not bring in the run loop and libp2p with it.
_WHERE = {"InitMaster": "core", "Master": "core", "MasterOptions": "options"}

if TYPE_CHECKING:
    from .core import InitMaster, Master
    from .options import MasterOptions


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
