"""The status API and the dashboard page as one read-only ASGI application.

Routes (``protocols/status.md`` specifies them):

* ``GET /``: the dashboard page, with its script and style under ``/static``;
* ``GET /api/status``: the status document;
* ``GET /api/events?since=N``: the events after the N-th, as a JSON list;
* ``GET /api/stream``: server-sent events: ``status`` (the document,
  whenever it changes) and ``events`` (a list of new events), so a page
  follows the job without polling. A stream ends once the job has ended and
  its final state was sent.

Everything is a GET: the dashboard shows a job, it never steers one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..status import StatusSource

__all__ = ["ENDED", "StreamCount", "status_app"]

ENDED: Final = ("done", "failed", "interrupted")
PUSH_INTERVAL: Final = 0.5   # seconds between checks for a changed document
KEEPALIVE: Final = 15.0      # a comment line this often keeps proxies from closing the stream


class StreamCount:
    """Open event streams, and how many of them have sent a job's final state:
    a master that is about to exit waits for the second to catch up."""

    def __init__(self) -> None:
        self.open = 0
        self.final = 0
        self._changed = trio.Event()

    def note(self, opened: int = 0, final: int = 0) -> None:
        self.open += opened
        self.final += final
        self._changed.set()
        self._changed = trio.Event()

    async def settled(self) -> None:
        """Return once every open stream has sent the job's final state."""
        while self.final < self.open:
            await self._changed.wait()


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(source: StatusSource, since: int, count: StreamCount) -> AsyncIterator[bytes]:
    count.note(opened=1)
    sent_final = False
    try:
        last: dict[str, Any] | None = None
        quiet = 0.0
        while True:
            doc = await source.status()
            fresh = await source.events(since)
            if fresh:
                since = int(fresh[-1]["seq"])
                yield _sse("events", fresh)
            if doc != last:
                last = doc
                quiet = 0.0
                yield _sse("status", doc)
            elif quiet >= KEEPALIVE:
                quiet = 0.0
                yield b": keepalive\n\n"
            if doc["state"] in ENDED:
                count.note(final=1)
                sent_final = True
                yield _sse("end", {"state": doc["state"]})
                return
            await trio.sleep(PUSH_INTERVAL)
            quiet += PUSH_INTERVAL
    finally:
        count.note(opened=-1, final=-1 if sent_final else 0)


def status_app(source: StatusSource, count: StreamCount | None = None) -> Starlette:
    """The application over ``source``; ``count`` tracks its event streams."""
    streams = count or StreamCount()
    page = StaticFiles(packages=[("p2pmr.dashboard", "page")])

    async def index(request: Request) -> Response:
        return await page.get_response("index.html", request.scope)

    async def status(request: Request) -> Response:
        return JSONResponse(await source.status())

    async def events(request: Request) -> Response:
        return JSONResponse(await source.events(_since(request)))

    async def stream(request: Request) -> Response:
        return StreamingResponse(_stream(source, _since(request), streams),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return Starlette(routes=[
        Route("/", index), Route("/api/status", status), Route("/api/events", events),
        Route("/api/stream", stream), Mount("/static", page, name="static")])


def _since(request: Request) -> int:
    text = request.query_params.get("since", "0")
    if not text.isdigit():
        raise HTTPException(400, f"since must be a non-negative integer, not {text!r}")
    return int(text)

