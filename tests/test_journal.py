"""The master's journal survives a crash in the middle of a write."""

from __future__ import annotations

from pathlib import Path

from p2pmr.job import JobDescriptor
from p2pmr.master.journal import Journal, find_journal
from p2pmr.storage.cid import CID


def _descriptor() -> JobDescriptor:
    return JobDescriptor(CID.hash(b"code"), CID.hash(b"input"), 2)


async def test_a_torn_last_record_is_cut_and_the_next_one_kept(tmp_path: Path) -> None:
    job = CID.hash(b"job")
    journal = Journal.open(tmp_path, job, _descriptor())
    await journal.append({"t": "done", "phase": "map", "index": 0})
    journal.close()
    # The crash came mid-write.
    journal.path.write_text(journal.path.read_text() + '{"t":"done","phase":"map","ind')
    reopened = Journal.open(tmp_path, job, _descriptor())
    assert [r.get("index") for r in reopened.records if r["t"] == "done"] == [0]
    await reopened.append({"t": "done", "phase": "map", "index": 1})
    reopened.close()
    again = Journal.open(tmp_path, job, _descriptor())
    assert [r.get("index") for r in again.records if r["t"] == "done"] == [0, 1]
    again.close()


async def test_a_journal_torn_in_its_first_record_starts_over(tmp_path: Path) -> None:
    job = CID.hash(b"job")
    path = tmp_path / str(job) / "journal"
    path.parent.mkdir(parents=True)
    path.write_text('{"t":"job","jo')
    journal = Journal.open(tmp_path, job, _descriptor())
    assert journal.records[0]["t"] == "job"
    journal.close()
    found = find_journal(tmp_path)
    assert found is not None and found.job == job
