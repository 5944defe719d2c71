"""The output: a UnixFS directory of ``part-NNNNN`` files and a manifest.

Spec section 6.5. The directory and everything in it are pinned in the
master's store, so the output stays retrievable from the master alone.
"""

from __future__ import annotations

import json
from typing import Any

from ..storage import unixfs
from ..storage.base import BlockStore, dag_links
from ..storage.cid import CID
from .outputs import MapOutput, ReduceOutput
from .scheduler import Task

__all__ = ["assemble"]


async def _dag_size(blocks: BlockStore, cid: CID, timeout: float) -> int:
    total = 0
    stack = [cid]
    while stack:
        current = stack.pop()
        block = await blocks.get(current, timeout=timeout)
        total += len(block)
        stack.extend(dag_links(current, block))
    return total


async def assemble(blocks: BlockStore, *, job: CID, code: CID, input_cid: CID,
                   encoding: str, cid_version: int, map_tasks: list[Task],
                   reduce_tasks: list[Task], counts: dict[str, int], timeout: float
                   ) -> tuple[CID, dict[str, Any]]:
    """Store and pin the output directory; return its CID and the manifest."""
    entries: list[tuple[str, CID, int]] = []
    parts = []
    reduce_outputs: list[ReduceOutput] = []
    for task in reduce_tasks:
        out = task.output
        assert isinstance(out, ReduceOutput)
        reduce_outputs.append(out)
        name = f"part-{task.index:05d}"
        entries.append((name, out.cid, await _dag_size(blocks, out.cid, timeout)))
        parts.append({"name": name, "cid": str(out.cid), "bytes": out.size,
                      "records": out.records_out})
    map_outputs = [t.output for t in map_tasks]
    assert all(isinstance(o, MapOutput) for o in map_outputs)
    manifest = {
        "p2pmr": 1,
        "job": str(job),
        "code": str(code),
        "input": str(input_cid),
        "reducers": len(reduce_tasks),
        "encoding": encoding,
        "counts": {
            **counts,
            "map_tasks": len(map_tasks),
            "map_records_in": sum(o.records_in for o in map_outputs
                                  if isinstance(o, MapOutput)),
            "map_records_out": sum(o.records_out for o in map_outputs
                                   if isinstance(o, MapOutput)),
            "reduce_records_in": sum(o.records_in for o in reduce_outputs),
            "reduce_keys": sum(o.keys for o in reduce_outputs),
            "reduce_records_out": sum(o.records_out for o in reduce_outputs),
        },
        "parts": parts,
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    manifest_cid = await unixfs.add_bytes(blocks, data, unixfs.ImportOptions(
        cid_version=cid_version))
    entries.append(("_manifest.json", manifest_cid,
                    await _dag_size(blocks, manifest_cid, timeout)))
    root, block, _ = unixfs.build_directory(entries, cid_version)
    await blocks.put(root, block)
    await blocks.pin(root, recursive=True, timeout=timeout)
    return root, manifest
