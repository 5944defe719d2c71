"""The provenance record: what every task of a job read and what it wrote.

Spec section 6.6. The output directory links it as ``_provenance.json``,
so it is part of what the output CID names: nobody can change a claim in it
without changing the CID, and whoever holds only the CID can fetch it, run
any task again from the CIDs it names, and compare.

It holds only what the job decides: the code, the input, the parameters
that shape output bytes, the runtime, and per task its inputs, its output
CIDs and its memo key. Which peer ran a task, and who vouches for the
record, vary between runs that compute the same thing; putting them here
would give equal results different CIDs. The run report says who ran what.
"""

from __future__ import annotations

from typing import Any

from ..storage.cid import CID
from .journal import output_doc
from .memo import JobFacts, memo_key, work_doc
from .outputs import MapOutput, ReduceOutput
from .plan import MAP, REDUCE
from .scheduler import Task

__all__ = ["VERSION", "provenance_record"]

VERSION = 1


def _task(facts: JobFacts, task: Task) -> dict[str, Any]:
    entry: dict[str, Any] = {"phase": task.phase, "index": task.index,
                             **(work_doc(task.payload) or {}),
                             "key": memo_key(facts, task.payload)}
    if isinstance(task.output, (MapOutput, ReduceOutput)):
        entry["output"] = output_doc(task.output)
    return entry


def provenance_record(facts: JobFacts, *, job: CID, input_cid: CID,
                      parameters: dict[str, Any], map_tasks: list[Task],
                      reduce_tasks: list[Task]) -> dict[str, Any]:
    """The record of a finished job, as a JSON-ready document."""
    assert all(t.phase == MAP for t in map_tasks) and \
        all(t.phase == REDUCE for t in reduce_tasks)
    return {
        "p2pmr_provenance": VERSION,
        "job": str(job),
        "code": str(facts.code),
        "input": str(input_cid),
        "runtime": facts.runtime,
        "parameters": {**parameters, "reducers": facts.reducers, "encoding": facts.encoding,
                       "cid_version": facts.cid_version, "record_keys": facts.record_keys,
                       "boundaries": str(facts.boundaries) if facts.boundaries else None},
        "tasks": [_task(facts, t) for t in (*map_tasks, *reduce_tasks)],
    }
