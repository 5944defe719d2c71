"""p2pmr: peer-to-peer, content-addressed MapReduce over IPFS.

The public API is re-exported here. Imports are lazy, so worker processes,
which import only the pieces that run user code, start without loading
libp2p.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CID",
    "ImportOptions",
    "InitMaster",
    "Job",
    "Master",
    "MasterOptions",
    "Node",
    "PeerConfig",
    "PhaseStatus",
    "Policy",
    "TotalOrder",
    "WorkerLimits",
    "open_node",
    "register_protocol",
    # errors
    "BlockNotFound",
    "BlockVerificationError",
    "CIDError",
    "CorruptBlock",
    "EncodingError",
    "JobError",
    "JobFailed",
    "LimitExceeded",
    "NotAuthorised",
    "P2PMRError",
    "ProtocolError",
    "RemoteTaskError",
    "StorageError",
    "UnixFSError",
    "UnverifiableOutput",
]

_WHERE = {
    "CID": "storage.cid",
    "ImportOptions": "storage.unixfs",
    "InitMaster": "master",
    "Master": "master",
    "MasterOptions": "master",
    "Job": "job",
    "Node": "node",
    "open_node": "node",
    "PeerConfig": "peer",
    "register_protocol": "peer",
    "PhaseStatus": "master.scheduler",
    "Policy": "master.policy",
    "TotalOrder": "partition",
    "WorkerLimits": "_worker",
}

if TYPE_CHECKING:
    from ._worker import WorkerLimits
    from .errors import (
        BlockNotFound,
        BlockVerificationError,
        CIDError,
        CorruptBlock,
        EncodingError,
        JobError,
        JobFailed,
        LimitExceeded,
        NotAuthorised,
        P2PMRError,
        ProtocolError,
        RemoteTaskError,
        StorageError,
        UnixFSError,
        UnverifiableOutput,
    )
    from .job import Job
    from .master import InitMaster, Master, MasterOptions
    from .master.policy import Policy
    from .master.scheduler import PhaseStatus
    from .node import Node, open_node
    from .partition import TotalOrder
    from .peer import PeerConfig, register_protocol
    from .storage.cid import CID
    from .storage.unixfs import ImportOptions


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None and name in __all__:
        module = "errors"
    if module is None:
        raise AttributeError(f"module 'p2pmr' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
