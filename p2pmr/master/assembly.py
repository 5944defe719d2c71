"""The output: a UnixFS directory of ``part-NNNNN`` files, a manifest and
the provenance record.

Spec sections 6.5 and 6.6. The directory and everything in it are pinned in the
master's store, so the output stays retrievable from the master alone.
"""

from __future__ import annotations

import json
from typing import Any

from ..storage import unixfs
from ..storage.base import BlockStore, dag_links
from ..storage.cid import CID
from .memo import JobFacts
from .outputs import MapOutput, ReduceOutput
from .provenance import provenance_record
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


async def _add_json(blocks: BlockStore, name: str, doc: dict[str, Any], cid_version: int,
                    timeout: float) -> tuple[str, CID, int]:
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    cid = await unixfs.add_bytes(blocks, data, unixfs.ImportOptions(cid_version=cid_version))
    return name, cid, await _dag_size(blocks, cid, timeout)


async def assemble(blocks: BlockStore, *, job: CID, facts: JobFacts, input_cid: CID,
                   parameters: dict[str, Any], map_tasks: list[Task],
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
        "code": str(facts.code),
        "input": str(input_cid),
        "reducers": len(reduce_tasks),
        "encoding": facts.encoding,
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
    entries.append(await _add_json(blocks, "_manifest.json", manifest, facts.cid_version,
                                   timeout))
    record = provenance_record(facts, job=job, input_cid=input_cid, parameters=parameters,
                               map_tasks=map_tasks, reduce_tasks=reduce_tasks)
    entries.append(await _add_json(blocks, "_provenance.json", record, facts.cid_version,
                                   timeout))
    root, block, _ = unixfs.build_directory(entries, facts.cid_version)
    await blocks.put(root, block)
    await blocks.pin(root, recursive=True, timeout=timeout)
    return root, manifest
