"""Reading a job's status from another process: ``p2pmr status`` and ``p2pmr dashboard``.

A running master is read through the repo's socket (:class:`RemoteStatus`);
:func:`running_master` says whether one is serving for the repo at all. A
job no master runs is read from its files (:class:`~p2pmr.status.StoredStatus`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from ..errors import P2PMRError
from ..repo import announced
from ..status import StatusSource, StoredStatus, find_job_dir, render_text
from .app import ENDED
from .serve import POINTER

__all__ = ["FollowStatus", "RemoteStatus", "running_master", "show_status", "status_source"]

TIMEOUT: Final = 5.0  # seconds for any one request: a live master answers at once


def running_master(repo: Path) -> dict[str, Any] | None:
    """The repo's ``master.json`` if the master it names is still running."""
    doc = announced(repo / POINTER)
    if doc is None or not Path(str(doc.get("socket"))).exists():
        return None
    return doc


class RemoteStatus:
    """A running master's status, over its socket."""

    def __init__(self, socket: str | Path) -> None:
        self.socket = str(socket)

    async def _get(self, path: str, **params: int) -> Any:
        transport = httpx.AsyncHTTPTransport(uds=self.socket)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://master",
                                         timeout=TIMEOUT) as client:
                response = await client.get(path, params=params)
                response.raise_for_status()
                return response.json()
        except httpx.HTTPError as exc:
            raise P2PMRError(f"the master's status socket {self.socket} did not answer: "
                             f"{exc or type(exc).__name__}") from exc

    async def status(self) -> dict[str, Any]:
        doc = await self._get("/api/status")
        assert isinstance(doc, dict)
        return doc

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        events = await self._get("/api/events", since=since)
        assert isinstance(events, list)
        return events


class FollowStatus:
    """A running master's status while it runs, then its job's files: a page
    or ``--watch`` that outlives the master shows how the job ended."""

    def __init__(self, remote: RemoteStatus, repo: Path, job: str | None) -> None:
        self.remote = remote
        self.repo = repo
        self.job = job
        self.stored: StoredStatus | None = None

    async def status(self) -> dict[str, Any]:
        if self.stored is None:
            try:
                doc = await self.remote.status()
                self.job = doc.get("job") or self.job
                return doc
            except P2PMRError:
                if self.job is None:
                    raise
                self.stored = StoredStatus(find_job_dir(self.repo, self.job), self.repo)
        return await self.stored.status()

    async def events(self, since: int = 0) -> list[dict[str, Any]]:
        if self.stored is None:
            with contextlib.suppress(P2PMRError):
                return await self.remote.events(since)
            return []
        return await self.stored.events(since)


async def status_source(repo: Path, job: str | None) -> StatusSource:
    """The job's status: from its master if one is running it, else from its files."""
    live = running_master(repo)
    if live is not None:
        remote = RemoteStatus(live["socket"])
        doc = await remote.status()
        if job is None or (doc.get("job") or "").startswith(job):
            return FollowStatus(remote, repo, doc.get("job"))
    return StoredStatus(find_job_dir(repo, job), repo)


async def show_status(repo: Path, job: str | None, *, as_json: bool, watch: bool,
                      interval: float, echo: Callable[[str], None], clear: bool) -> None:
    """Print the status once, or with ``watch`` until the job ends."""
    source = await status_source(repo, job)
    shown = None
    while True:
        doc = await source.status()
        if as_json:
            text = json.dumps(doc, separators=(",", ":")) if watch else json.dumps(doc, indent=2)
        else:
            text = render_text(doc)
        if text != shown:
            if clear and watch:
                echo("\x1b[H\x1b[2J")
            echo(text)
            shown = text
        if not watch or doc["state"] in ENDED:
            return
        await trio.sleep(interval)
