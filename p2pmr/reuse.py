"""Taking another master's work: ``p2pmr run ... --reuse CID``.

An output's provenance record (spec section 6.6) is a published memo:
every task with what it read and what it wrote. A job that would run one
of those tasks can take its output instead, on another machine, from
another master. Whether to believe the record is the question:

* an **attestation** (spec section 6.7) signed by a master the user trusts
  (``--trust-master``, or this repo's own key) is taken as it stands, as
  this repo's own memo is;
* anything else (an untrusted signer, or a bare output CID) is **checked
  by sampling** before any of it is used: ``p2pmr verify --sample`` runs
  a random draw of its tasks again (``--reuse-sample``, 5% and at least 3
  tasks by default), and one mismatch refuses the whole record. A liar who
  forged a share f of the tasks passes a draw of k with probability about
  (1 - f)^k; ``--reuse-sample 100%`` checks every task.

Taken outputs are fetched into this repo and pinned, as the master keeps
its own memoised outputs, then written to the memo under the keys their
tasks have; the job then takes them exactly as it takes its own.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .attestation import check_attestation
from .errors import P2PMRError, UnixFSError
from .job import runtime
from .master.memo import JobFacts, Memo
from .master.outputs import MapOutput, Output
from .storage import unixfs
from .storage.cid import CID
from .verify import Sample, read_record, verify_output

if TYPE_CHECKING:
    from .node import Node
    from .runner import RunSettings

__all__ = ["Taken", "take_records"]

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = Sample(share=0.05)
MIN_SAMPLE = 3


@dataclass
class Taken:
    """What one ``--reuse`` gave: the record's output, who vouched for it and
    how, and how many tasks went to the memo."""

    given: CID
    output: CID | None = None
    signer: str | None = None
    how: str = ""        # "trusted signer", "checked by sampling N tasks" or why refused
    tasks: int = 0


async def _resolve(node: Node, given: CID) -> tuple[CID, str | None]:
    """(the output, the verified signer if ``given`` is an attestation)."""
    try:
        await unixfs.list_directory(node.blocks, given)
        return given, None
    except UnixFSError:
        pass
    checked = check_attestation(await unixfs.read_range(node.blocks, given))
    return checked.output, checked.master


def _facts(record: dict[str, Any]) -> JobFacts:
    params = record["parameters"]
    return JobFacts(CID.parse(record["code"]), int(params["reducers"]), str(params["encoding"]),
                    int(params["cid_version"]), str(record["runtime"]),
                    CID.parse(params["boundaries"]) if params.get("boundaries") else None,
                    bool(params.get("record_keys", True)))


async def _remember(node: Node, record: dict[str, Any], timeout: float) -> int:
    """Fetch and pin every output the record names, and write each task
    whose outputs could be had into this repo's memo; return how many."""

    async def keep(output: Output) -> None:
        cids = output.partitions if isinstance(output, MapOutput) else [output.cid]
        for cid in cids:
            if cid is not None:
                await node.blocks.pin(cid, recursive=True, timeout=timeout)

    return await Memo(node.repo / "memo").take_record(
        _facts(record), record, job=CID.parse(record["job"]), keep=keep)


async def take_records(node: Node, given: Sequence[CID], settings: RunSettings, *,
                       trusted: Sequence[str], sample: Sample | None = None,
                       imported: Callable[[], object] = lambda: None,
                       timeout: float = 60.0) -> list[Taken]:
    """Put the tasks of each given record in this repo's memo, believed or
    checked as the module says; a record that fails its check is refused
    whole (a warning names the task that differed)."""
    results = []
    trust = {*trusted, str(node.peer_id)}
    for cid in given:
        taken = Taken(cid)
        results.append(taken)
        try:
            taken.output, taken.signer = await _resolve(node, cid)
            record, _ = await read_record(node.blocks, taken.output)
            if record.get("runtime") != runtime():
                taken.how = f"refused: computed by {record.get('runtime')!r}, not this runtime"
                continue
            if taken.signer is not None and taken.signer in trust:
                taken.how = "trusted signer"
            else:
                taken.how = await _check_by_sampling(node, taken.output, settings, sample,
                                                     len(record["tasks"]), imported)
                if taken.how.startswith("refused"):
                    continue
            taken.tasks = await _remember(node, record, timeout)
        except P2PMRError as exc:
            taken.how = f"refused: {exc}"
    return results


async def _check_by_sampling(node: Node, output: CID, settings: RunSettings,
                             sample: Sample | None, tasks: int,
                             imported: Callable[[], object]) -> str:
    chosen = sample or DEFAULT_SAMPLE
    if chosen.count is None and chosen.share is not None and chosen.share < 1:
        chosen = replace(chosen, count=min(tasks, max(MIN_SAMPLE, round(tasks * chosen.share))),
                         share=None)
    with tempfile.TemporaryDirectory(prefix="p2pmr-reuse-check-") as scratch:
        check_settings = replace(settings, repo=Path(scratch) / "repo", output=None,
                                 progress=False)
        verdict = await verify_output(check_settings, output, chosen,
                                      read_repos=(node.repo,), imported=imported)
    if not verdict.ok:
        return f"refused: {verdict.mismatches[0]}"
    return f"checked by sampling {verdict.checked} of {verdict.tasks} task(s)"
