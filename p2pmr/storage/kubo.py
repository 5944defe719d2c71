"""The Kubo backend: blocks live in an IPFS daemon, reached over its HTTP RPC API.

For peers that already run an IPFS daemon. Only block-level calls are used
(block get/put/stat, pin add, swarm connect) and dag-pb is decoded locally,
so any daemon that implements Kubo's ``/api/v0`` works, including ones whose
higher-level calls are broken.

``ipfshttpclient`` is unmaintained, so it is used with care:

* its ``connect()`` refuses daemons newer than 0.7; we construct
  ``Client(addr)`` directly and check the version ourselves;
* keyword options such as ``block.put(format=...)`` fail; options go in
  ``opts={...}``;
* ``swarm.connect`` splits its address into characters; we send the request
  ourselves;
* its calls block, so each runs in a thread under a deadline, and the daemon
  is also given a server-side ``timeout`` so a missing block is reported
  rather than waited for forever.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from ..errors import (
    BlockNotFound,
    BlockTooLarge,
    BlockVerificationError,
    CIDError,
    CorruptBlock,
    KuboError,
)
from .base import MAX_BLOCK_SIZE, missing_blocks
from .cid import CID, DAG_PB, RAW

__all__ = ["KuboStore", "MIN_VERSION"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_VERSION: Final = (0, 4, 23)  # the first Kubo (go-ipfs) with the block and pin API we use
_SLACK: Final = 5.0  # client-side deadline beyond the daemon's own timeout

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import ipfshttpclient
    import ipfshttpclient.exceptions as ipfs_errors

# urllib3 2.x warns on every request the old client makes.
warnings.filterwarnings("ignore", message=".*'strict' parameter.*", category=FutureWarning)


def _api_multiaddr(api: str) -> str:
    """Accept /ip4/…/tcp/PORT (Kubo's own form) as well as …/http."""
    if api.startswith(("http://", "https://")):
        match = re.match(r"https?://([^:/]+):(\d+)", api)
        if not match:
            raise KuboError(f"cannot parse IPFS API address {api!r}")
        host, port = match.groups()
        proto = "dns" if not re.match(r"^[\d.]+$", host) else "ip4"
        return f"/{proto}/{host}/tcp/{port}/{'https' if api.startswith('https') else 'http'}"
    if not api.endswith(("/http", "/https")):
        api = api.rstrip("/") + "/http"
    return api


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text.split("-")[0])
    return tuple(int(p) for p in parts[:3])


def _gave_up(exc: KuboError) -> bool:
    """Whether the daemon (or our deadline) gave up on finding a block.

    Kubo says "context deadline exceeded" when its ``timeout`` option
    expires; js-ipfs says "timed out"; our own deadline says "did not answer".
    """
    text = str(exc).lower()
    return any(s in text for s in ("timed out", "timeout", "deadline", "not found",
                                   "did not answer"))


class KuboStore:
    """A :class:`~p2pmr.storage.base.BlockStore` backed by an IPFS daemon.

    The daemon keeps its own blocks: no local directory for workers to use
    (they get their blocks through the peer), and no corrupt copies of ours.
    """

    def __init__(self, client: Any, api: str, *, default_timeout: float = 60.0) -> None:
        self._client = client
        self.api = api
        self.default_timeout = default_timeout
        self.version = ""
        self.local_root: Path | None = None
        self.read_roots: tuple[Path, ...] = ()
        self._limiter = trio.CapacityLimiter(16)
        self._introduced: set[str] = set()

    @property
    def corrupt(self) -> Mapping[CID, CorruptBlock]:
        return {}

    @classmethod
    async def connect(cls, api: str, *, timeout: float = 60.0) -> KuboStore:
        """Check that a usable daemon answers at ``api`` and return a store for it."""
        addr = _api_multiaddr(api)
        try:
            client = ipfshttpclient.Client(addr, timeout=timeout + _SLACK)
        except Exception as exc:
            raise KuboError(f"bad IPFS API address {api!r}: {exc}") from exc
        store = cls(client, addr, default_timeout=timeout)
        try:
            info = await store._call(lambda: client.version(), 10.0)
        except KuboError as exc:
            raise KuboError(f"cannot reach the IPFS daemon at {api}: {exc}") from None
        version = str(info.get("Version", "")) if hasattr(info, "get") else ""
        if not version:
            raise KuboError(f"the daemon at {api} did not report a version")
        if _version_tuple(version) < MIN_VERSION:
            raise KuboError(f"the daemon at {api} runs version {version}; p2pmr needs "
                            f"{'.'.join(map(str, MIN_VERSION))} or newer")
        store.version = version
        log.info("using IPFS daemon %s at %s", version, api)
        return store

    async def _call(self, fn: Callable[[], T], deadline: float) -> T:
        # The deadline starts once a slot is ours: time queued behind other
        # calls is not the daemon's (each slot holder has its own deadline).
        try:
            async with self._limiter:
                with trio.fail_after(deadline):
                    return await trio.to_thread.run_sync(  # type: ignore[call-arg]
                        fn, abandon_on_cancel=True)
        except trio.TooSlowError:
            raise KuboError(f"the IPFS daemon did not answer within {deadline:g}s") from None
        except ipfs_errors.ErrorResponse as exc:
            raise KuboError(str(exc)) from None
        except ipfs_errors.Error as exc:
            raise KuboError(f"{type(exc).__name__}: {exc}") from None

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[Any] = ()) -> bytes:
        wait = self._timeout(timeout)
        opts = {"timeout": f"{max(wait, 0.001):.3f}s"}
        try:
            data = await self._call(lambda: self._client.block.get(str(cid), opts=opts),
                                    wait + _SLACK)
        except KuboError as exc:
            if _gave_up(exc):
                raise BlockNotFound(cid, f"the IPFS daemon could not get it within {wait:g}s") \
                    from None
            raise
        if not isinstance(data, (bytes, bytearray)):
            raise KuboError(f"unexpected block.get reply {type(data).__name__}")
        data = bytes(data)
        if not cid.verify(data):
            raise BlockVerificationError(
                f"the IPFS daemon returned bytes that do not hash to {cid}")
        return data

    async def put(self, cid: CID, data: bytes) -> None:
        if len(data) > MAX_BLOCK_SIZE:
            raise BlockTooLarge(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
        if cid.codec == RAW:
            fmt = "raw"
        elif cid.codec == DAG_PB:
            fmt = "dag-pb" if cid.version == 1 else "v0"
        else:
            raise KuboError(f"cannot put a {cid.codec_name} block through this backend")
        opts = {"format": fmt, "mhtype": "sha2-256", "version": str(cid.version)}
        reply = await self._call(
            lambda: self._client.block.put(io.BytesIO(data), opts=opts), self.default_timeout)
        try:
            got = CID.parse(reply["Key"])
        except (KeyError, TypeError, CIDError) as exc:
            raise KuboError(f"unexpected block.put reply {reply!r}") from exc
        if got.multihash != cid.multihash:
            raise KuboError(f"the daemon stored the block as {got}, expected {cid}")

    async def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        for cid, data in blocks:
            await self.put(cid, data)

    async def written(self, cids: Sequence[CID]) -> None:
        """Nothing to do: no other process writes into a daemon's store."""

    async def missing(self, root: CID) -> list[CID]:
        return await missing_blocks(self, root)

    async def holders(self, cids: Sequence[CID], peers: Sequence[Any], *,
                      timeout: float) -> dict[CID, set[Any]]:
        """Unknown: the RPC API has no want-have round, so no locality."""
        await trio.lowlevel.checkpoint()
        return {}

    async def has(self, cid: CID) -> bool:
        opts = {"offline": "true", "timeout": "1s"}
        try:
            await self._call(lambda: self._client.block.stat(str(cid), opts=opts), 1.0 + _SLACK)
        except KuboError:
            return False
        return True

    async def pin(self, cid: CID, *, recursive: bool = True, timeout: float | None = None) -> None:
        wait = self._timeout(timeout)
        opts = {"timeout": f"{wait:.3f}s"}
        try:
            await self._call(lambda: self._client.pin.add(str(cid), recursive=recursive,
                                                          opts=opts), wait + _SLACK)
        except KuboError as exc:
            if _gave_up(exc):
                raise BlockNotFound(cid, f"could not pin it within {wait:g}s") from None
            raise

    async def swarm_connect(self, addr: str, *, timeout: float = 10.0) -> bool:
        """Ask the daemon to dial ``addr`` (a full ``…/p2p/ID`` multiaddr)."""
        if addr in self._introduced:
            return True
        opts = {"timeout": f"{timeout:g}s"}
        try:
            await self._call(lambda: self._client._client.request(
                "/swarm/connect", (addr,), decoder="json", opts=opts), timeout + _SLACK)
        except KuboError as exc:
            log.debug("daemon could not connect to %s: %s", addr, exc)
            return False
        self._introduced.add(addr)
        return True

    async def peer_id(self) -> str:
        info = await self._call(lambda: self._client.id(), 10.0)
        return str(info["ID"])
