"""Serving the status API: on the repo's socket always, on TCP when asked.

A running ``p2pmr run`` serves its job's status on a Unix socket beside its
repo, so that ``p2pmr status`` and ``p2pmr dashboard`` in any terminal of
the machine find it with nothing but ``--repo``, and only the repo's owner
can read it (the socket is mode 0600). The repo's ``master.json`` names the
socket and, with ``--dashboard HOST:PORT``, the page's address; it goes
when the master does (``protocols/status.md``, section 3).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

from ..errors import P2PMRError
from ..repo import announce
from ..status import StatusSource
from .app import StreamCount, status_app

__all__ = ["POINTER", "Served", "serving", "socket_path"]

log = logging.getLogger(__name__)

POINTER: Final = "master.json"
FINAL_STATE_GRACE: Final = 2.0  # seconds an exiting master waits for pages to get its end


def socket_path(repo: Path) -> Path:
    """The repo's status socket: in the repo, unless that path is too long for
    a Unix socket (about 100 bytes); then in the temporary directory, named
    after the repo."""
    path = repo.resolve() / "master.sock"
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(repo.resolve())).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"p2pmr-{digest}.sock"


@dataclass(frozen=True)
class Served:
    socket: Path
    dashboard: str | None  # the page's URL, with --dashboard


def _check_bind(bind: str) -> str:
    """HOST:PORT, with a word of warning when HOST is not a loopback address."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise P2PMRError(f"--dashboard wants HOST:PORT (e.g. 127.0.0.1:8787), not {bind!r}")
    bare = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(bare).is_loopback
    except ValueError:
        loopback = bare == "localhost"
    if not loopback:
        log.warning("the dashboard is served on %s: anyone who can reach that address can "
                    "read the job's status, failures and tracebacks", bind)
    return bind


@contextlib.asynccontextmanager
async def serving(source: StatusSource, repo: Path, *, dashboard: str | None = None,
                  local: bool = True) -> AsyncIterator[Served]:
    """Serve ``source`` for the duration of the block.

    With ``local``, on the repo's socket (and ``master.json`` points to it);
    with ``dashboard``, on that TCP address too.
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    count = StreamCount()
    config = Config()
    config.errorlog = logging.getLogger("p2pmr.dashboard.http")
    config.accesslog = None
    config.graceful_timeout = 1.0
    sock = socket_path(repo)
    config.bind = []
    if local:
        if sock.exists() or sock.is_symlink():
            sock.unlink()  # left by a master that crashed: the repo lock says it is gone
        config.bind.append(f"unix:{sock}")
    if dashboard is not None:
        config.bind.append(_check_bind(dashboard))
    async with trio.open_nursery() as nursery:
        try:
            # starlette's and hypercorn's ASGI types are one protocol, spelled twice.
            app: Any = status_app(source, count)
            binds = await nursery.start(partial(serve, app, config))
        except OSError as exc:
            raise P2PMRError(f"cannot serve the status API on {', '.join(config.bind)}: "
                             f"{exc.strerror or exc}") from exc
        url = next((b for b in binds if "unix:" not in b), None)
        try:
            with contextlib.ExitStack() as stack:
                if local:
                    os.chmod(sock, 0o600)
                    stack.enter_context(announce(repo / POINTER, {
                        "pid": os.getpid(), "socket": str(sock), "dashboard": url}))
                try:
                    yield Served(sock, url)
                except Exception:  # the job failed: pages should say so too
                    with trio.move_on_after(FINAL_STATE_GRACE):
                        await count.settled()
                    raise
                # Let open pages receive the job's final state before the server goes.
                with trio.move_on_after(FINAL_STATE_GRACE):
                    await count.settled()
        finally:
            if local:
                with contextlib.suppress(OSError):
                    sock.unlink()
            nursery.cancel_scope.cancel()
