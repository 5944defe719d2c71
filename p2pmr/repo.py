"""A repo on disk: who may use it, who is using it, and what it may forget.

A repo holds blocks, pins, the memo of task outputs and the journals of
jobs. While a node runs on it (``p2pmr peer``, ``p2pmr run``), it also
holds ``node.json``, as Kubo's repo holds ``api``: what ``p2pmr id`` prints
about that node, written atomically once it listens and removed when it
stops::

    {"peer_id": "12D3Koo…", "addrs": ["/ip4/127.0.0.1/tcp/4005/p2p/12D3Koo…"], "pid": 4242}

A node that crashed leaves it behind: :func:`running_node` ignores it once
no process has that pid, and the next node replaces it.

Blocks accumulate: every job writes partitions and part files, every
fetch keeps what it fetched. :func:`collect` bounds that, as ``ipfs repo
gc`` does, by keeping what something still needs and removing the rest:

* every pinned DAG (outputs, added inputs);
* what an unfinished job needs to resume: its descriptor, code, input and
  boundaries, and every CID its journal names;
* what the memo names, after entries beyond the age or size limits are
  dropped (an output kept only for the memo is unpinned with its entry).

Everything else, fetched copies and the intermediates of finished jobs
included, can be fetched or computed again. It runs under the repo lock,
so never beside a node that is writing to the repo. A block that should
be kept but is missing or corrupt stops it before anything is removed:
with a damaged DAG, what it links to cannot be known.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import NodeError, P2PMRError, StorageError
from .storage.base import dag_links
from .storage.cid import CID
from .storage.flatfs import FlatFS

__all__ = ["Collected", "RunningNode", "announce", "announced", "collect", "node_file",
           "repo_lock", "running_node"]

log = logging.getLogger(__name__)

LOCK_FILE: Final = "repo.lock"
NODE_FILE: Final = "node.json"
_CID_TEXT = re.compile(r"\b(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{50,})\b")


@contextlib.contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Exclusive use of a repo: by one running node (its identity is unique),
    or by a garbage collection."""
    with open(repo / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeError(f"repo {repo} is in use by another running node") from None
        yield


@dataclass(frozen=True)
class RunningNode:
    """The node running on a repo, as its ``node.json`` says."""

    peer_id: str
    addrs: tuple[str, ...]  # full multiaddrs, each ending in /p2p/PEER_ID
    pid: int

    def as_json(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "addrs": list(self.addrs), "pid": self.pid}


@contextlib.contextmanager
def announce(path: Path, doc: dict[str, object]) -> Iterator[None]:
    """Say in ``path``, for as long as the block runs, that this process
    (``doc["pid"]``) serves something there: ``node.json``, the status
    API's ``master.json``.

    Written to a temporary file and renamed, so a reader never sees half of
    it; removed on the way out only if it is still ours.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only repo, say: what it announces runs all the same
        log.warning("cannot write %s: %s", path, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    try:
        yield
    finally:
        if _read_json(path) == doc:
            with contextlib.suppress(OSError):
                path.unlink()


def _lock_held(repo: Path) -> bool | None:
    """Whether a process holds ``repo``'s lock (``None``: the repo has no lock
    file to ask). Taking it for a moment is the only way to know."""
    try:
        handle = open(repo / LOCK_FILE, "rb")  # noqa: SIM115 (closed below)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        return False  # closing the file lets go at once


def announced(path: Path) -> dict[str, Any] | None:
    """What :func:`announce` wrote in ``path``, if the process it names still
    runs (a process that crashed leaves its file behind).

    A node holds its repo's lock while it runs, so a free lock beside the file
    says it is gone even when its pid is not: in a container a node is pid 1,
    which every later container on the same volume sees alive.
    """
    doc = _read_json(path)
    if doc is None:
        return None
    if _lock_held(path.parent) is False:
        log.debug("ignoring %s: no process holds the repo's lock (it did not stop "
                  "cleanly)", path)
        return None
    try:
        os.kill(int(doc.get("pid", 0)), 0)
    except ProcessLookupError:
        log.debug("ignoring %s: its process %s is gone (it did not stop cleanly)",
                  path, doc.get("pid"))
        return None
    except PermissionError:  # alive, another user's
        pass
    except (TypeError, ValueError, OverflowError) as exc:
        log.debug("ignoring %s: %s", path, exc)
        return None
    return doc


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.debug("ignoring the unreadable %s: %s", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


@contextlib.contextmanager
def node_file(repo: Path, peer_id: str, addrs: list[str]) -> Iterator[None]:
    """Say in ``repo`` that this process runs a node there, for as long as it does."""
    with announce(repo / NODE_FILE, RunningNode(peer_id, tuple(addrs), os.getpid()).as_json()):
        yield


def running_node(repo: Path) -> RunningNode | None:
    """The node running on ``repo`` now, or None (none, or a crashed one's file)."""
    doc = announced(repo / NODE_FILE)
    if doc is None:
        log.debug("no node is running on %s (no readable %s of a live process)", repo,
                  NODE_FILE)
        return None
    try:
        return RunningNode(str(doc["peer_id"]), tuple(str(a) for a in doc["addrs"]),
                           int(doc["pid"]))
    except (KeyError, TypeError, ValueError) as exc:
        log.debug("ignoring the unreadable %s: %s", repo / NODE_FILE, exc)
        return None


@dataclass
class Collected:
    """What a collection removed and kept."""

    blocks_removed: int = 0
    bytes_removed: int = 0
    blocks_kept: int = 0
    memo_removed: int = 0
    memo_kept: int = 0
    unfinished_jobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _MemoEntry:
    path: Path
    created: float
    outputs: tuple[CID, ...]


def _cids_in(text: str) -> Iterator[CID]:
    for match in _CID_TEXT.finditer(text):
        with contextlib.suppress(P2PMRError, ValueError):
            yield CID.parse(match.group(1))


def _memo_entries(repo: Path) -> list[_MemoEntry]:
    entries = []
    for path in sorted((repo / "memo").glob("*/*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            created = float(doc.get("created", 0.0))
            outputs = tuple(_cids_in(json.dumps(doc.get("output", {}))))
        except (OSError, ValueError, TypeError):
            created, outputs = 0.0, ()  # unreadable: a miss anyway, the first to go
        entries.append(_MemoEntry(path, created, outputs))
    return entries


def _unfinished_roots(repo: Path) -> tuple[list[str], set[CID], set[CID]]:
    """Unfinished jobs, the CIDs they must keep (descriptor, code, input,
    boundaries), and those their journals name (kept if here)."""
    from .master.journal import list_journals

    jobs: list[str] = []
    needed: set[CID] = set()
    named: set[CID] = set()
    for found in list_journals(repo / "jobs"):
        if found.complete:
            continue
        jobs.append(str(found.job))
        descriptor = found.descriptor
        needed.update(cid for cid in (found.job, descriptor.code, descriptor.input,
                                      descriptor.boundaries) if cid is not None)
        with contextlib.suppress(OSError):
            named.update(_cids_in(found.path.read_text(errors="replace")))
    return jobs, needed, named


def _mark(fs: FlatFS, roots: Iterable[CID], live: set[Path], *, strict: bool) -> None:
    """Add the block files of every DAG under ``roots`` to ``live``. With
    ``strict`` a missing or corrupt block is an error; otherwise what is
    missing is skipped (intermediates that stayed on their peers)."""
    stack = list(roots)
    while stack:
        cid = stack.pop()
        path = fs.path_of(cid)
        if path in live:
            continue
        block = fs.read(cid)
        if block is None:
            if strict:
                raise StorageError(
                    f"cannot collect garbage: block {cid}, which a pin or an unfinished "
                    "job needs, is missing or corrupt. Run `p2pmr repo verify`, and fetch "
                    "it again (`p2pmr cat` with --bootstrap) or unpin what needs it")
            continue
        live.add(path)
        stack.extend(dag_links(cid, block))


def _prune_memo(entries: list[_MemoEntry], fs: FlatFS, now: float, max_age: float | None,
                max_bytes: int | None) -> tuple[list[_MemoEntry], list[_MemoEntry]]:
    """(kept, dropped): the newest entries within both limits."""
    kept, dropped, total = [], [], 0
    for entry in sorted(entries, key=lambda e: e.created, reverse=True):
        size = 0
        if max_bytes is not None:
            blocks: set[Path] = set()
            _mark(fs, entry.outputs, blocks, strict=False)
            size = sum(p.stat().st_size for p in blocks if p.exists())
        if (max_age is not None and now - entry.created > max_age) or \
                (max_bytes is not None and total + size > max_bytes):
            dropped.append(entry)
            continue
        total += size
        kept.append(entry)
    return kept, dropped


def collect(repo: Path, *, memo_max_age: float | None = None,
            memo_max_bytes: int | None = None, dry_run: bool = False) -> Collected:
    """Remove what nothing needs (see the module's docstring)."""
    fs = FlatFS(repo)
    if not fs.blocks.is_dir():
        raise StorageError(f"{repo} has no blocks/ directory: not a p2pmr repo")
    result = Collected()
    with repo_lock(repo):
        kept, dropped = _prune_memo(_memo_entries(repo), fs, time.time(), memo_max_age,
                                    memo_max_bytes)
        still_named = {cid for entry in kept for cid in entry.outputs}
        pins = {}
        for pin in (repo / "pins").glob("*") if (repo / "pins").is_dir() else ():
            with contextlib.suppress(P2PMRError, ValueError, OSError):
                pins[CID.parse(pin.name)] = (pin, pin.read_text().strip())
        # An output kept for the memo alone goes with its entry.
        unpinned = {cid for entry in dropped for cid in entry.outputs
                    if cid in pins and cid not in still_named}
        result.unfinished_jobs, needed, named = _unfinished_roots(repo)
        live: set[Path] = set()
        recursive = [cid for cid, (_, how) in pins.items()
                     if how == "recursive" and cid not in unpinned]
        _mark(fs, [*recursive, *needed], live, strict=True)
        live.update(fs.path_of(cid) for cid, (_, how) in pins.items()
                    if how != "recursive" and cid not in unpinned)
        _mark(fs, [*named, *still_named], live, strict=False)
        result.memo_kept, result.memo_removed = len(kept), len(dropped)
        for path in fs.blocks.glob("*/*.data"):
            if path in live:
                result.blocks_kept += 1
                continue
            result.blocks_removed += 1
            with contextlib.suppress(OSError):
                result.bytes_removed += path.stat().st_size
                if not dry_run:
                    path.unlink()
        if not dry_run:
            for entry in dropped:
                entry.path.unlink(missing_ok=True)
            for cid in unpinned:
                pins[cid][0].unlink(missing_ok=True)
    log.info("collected %d blocks (%d bytes), kept %d", result.blocks_removed,
             result.bytes_removed, result.blocks_kept)
    return result


def describe(result: Collected, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    jobs = (f"; kept what {len(result.unfinished_jobs)} unfinished job(s) need to resume"
            if result.unfinished_jobs else "")
    return (f"{verb} {result.blocks_removed} block(s), {result.bytes_removed / 2**20:.1f} MiB; "
            f"kept {result.blocks_kept}; memo: {verb} {result.memo_removed} entr(ies), kept "
            f"{result.memo_kept}{jobs}")
