"""The on-disk block store, in Kubo's flatfs layout.

A block lives at ``blocks/<XX>/<KEY>.data`` where KEY is the unpadded
base32 of its multihash and XX are KEY's next-to-last two characters
(flatfs ``next-to-last/2``). Keying by multihash, as Kubo does, means a raw
block and a dag-pb block with the same bytes share a file.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from ..errors import (
    BlockNotFound,
    BlockTooLarge,
    BlockVerificationError,
    CorruptBlock,
    P2PMRError,
    StorageError,
)
from .base import MAX_BLOCK_SIZE, dag_links
from .cid import CID, RAW

__all__ = ["FlatFS", "FlatFSReader", "FlatFSStore"]

log = logging.getLogger(__name__)


def _key(cid: CID) -> str:
    return base64.b32encode(cid.multihash).decode("ascii").rstrip("=")


class FlatFS:
    """Synchronous access to a flatfs block directory.

    Worker processes use it to read their input blocks and write their
    output blocks in place, instead of shipping block bytes to and from the
    peer's main process. Writes are atomic (temporary file, then rename).

    Every read is checked against the CID, as every block from the network
    is: a disk that flips a bit, or a file edited by hand, must not turn into
    a wrong result or be served to peers. A copy that fails the check is
    moved aside into ``<repo>/corrupt/`` and the block counts as missing.

    With ``read_only`` the directory is another repo's, read in place (a
    local peer reading its master's store): nothing here ever writes to it
    or moves anything in it, a corrupt copy included, which is left for its
    owner to find; it only counts as missing for us.
    """

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.blocks = self.root / "blocks"
        self.corrupt_dir = self.root / "corrupt"
        self.read_only = read_only

    def path_of(self, cid: CID) -> Path:
        key = _key(cid)
        return self.blocks / key[-3:-1] / f"{key}.data"

    def read(self, cid: CID) -> bytes | None:
        """The block's bytes, checked against ``cid``; None if it is not stored.

        Raises :class:`CorruptBlock` (a :class:`BlockNotFound`) for a copy
        that does not hash to ``cid``, once it has been moved aside.
        """
        path = self.path_of(cid)
        for _ in range(2):
            try:
                with open(path, "rb") as handle:
                    inode = os.fstat(handle.fileno()).st_ino
                    data = handle.read()
            except FileNotFoundError:
                return None
            if cid.verify(data):
                return data
            if self.read_only:
                raise CorruptBlock(cid, path, also="left in place: that store is another "
                                                   "repo's, read only here")
            error = self.set_aside(cid, path, inode)
            if error is not None:
                raise error
            # An intact copy replaced the bad one as we read it: read that.
        return None

    def set_aside(self, cid: CID, path: Path, inode: int | None = None
                  ) -> CorruptBlock | None:
        """Move a corrupt copy out of the store; return the error that says so.

        With ``inode``, only that file is moved: if another has taken its
        place meanwhile (a repair), nothing is moved and None is returned.
        """
        self._check_writable()
        self.corrupt_dir.mkdir(exist_ok=True)
        target = self.corrupt_dir / path.name
        n = 0
        while target.exists():
            n += 1
            target = self.corrupt_dir / f"{path.name}.{n}"
        try:
            if inode is not None and os.stat(path).st_ino != inode:
                return None
            os.replace(path, target)
        except FileNotFoundError:  # another reader moved it first
            return CorruptBlock(cid, path)
        log.error("block %s is corrupt: %s does not hash to it; moved it to %s, and the "
                  "block now counts as missing", cid, path, target)
        return CorruptBlock(cid, path, target)

    def write(self, cid: CID, data: bytes) -> None:
        """Store a block the caller has checked, repairing a corrupt copy in place."""
        self._check_writable()
        path = self.path_of(cid)
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return
            log.warning("replacing a corrupt copy of block %s at %s", cid, path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _check_writable(self) -> None:
        if self.read_only:
            raise StorageError(f"{self.root} is another repo's block store, read only here")

    def scan(self) -> Iterator[tuple[CID, Path, bool]]:
        """Every stored block as (CID, path, intact), read and hashed one by one.

        flatfs names a block file by its multihash, so the CID given is the
        CIDv1 ``raw`` one of that multihash, which names the same block
        for any tool that keys blocks by multihash (Kubo does).
        """
        for path in sorted(self.blocks.glob("*/*.data")):
            key = path.name[:-len(".data")]
            try:
                multihash = base64.b32decode(key + "=" * (-len(key) % 8))
                cid = CID.from_bytes(b"\x01" + bytes([RAW]) + multihash)
            except (ValueError, P2PMRError):
                log.warning("%s is not named like a block; skipped", path)
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            yield cid, path, cid.verify(data)


class FlatFSReader:
    """Reads a block from the first of several flatfs directories that holds it.

    A node's own store comes first, then other repos' stores on the same
    disk, read in place and never written (:attr:`FlatFS.read_only`): a
    local peer reads its master's blocks where they lie, instead of having
    them copied over the network into a store of its own. Blocks are named
    by their hashes and every read is checked, so any copy that hashes
    right is the block, whichever repo holds it.
    """

    def __init__(self, own: str | os.PathLike[str] | None,
                 others: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.stores = ([FlatFS(own)] if own is not None else []) + \
            [FlatFS(root, read_only=True) for root in others]

    def read(self, cid: CID) -> bytes | None:
        """The block's bytes, checked, from the first store with an intact copy.

        None if no store holds it; :class:`CorruptBlock` if the only copies
        are corrupt (the own store's is set aside, as by :meth:`FlatFS.read`).
        """
        corrupt: CorruptBlock | None = None
        for fs in self.stores:
            try:
                data = fs.read(cid)
            except CorruptBlock as exc:
                corrupt = corrupt or exc
                continue
            if data is not None:
                return data
        if corrupt is not None:
            raise corrupt
        return None


class FlatFSStore:
    """Blocks as files on disk, with a pin set beside them.

    Writes are atomic (write to a temporary file, then rename), so a crash
    never leaves a truncated block under a valid name. Every read is checked
    against the CID (see :class:`FlatFS`); a corrupt copy is set aside,
    remembered in :attr:`corrupt` until the block is stored again, and the
    block reads as missing, so the embedded node fetches it from its peers.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.local_root: Path | None = self.root
        self.read_roots: tuple[Path, ...] = ()
        self.fs = FlatFS(self.root)
        self._blocks = self.fs.blocks
        self._pins = self.root / "pins"
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._pins.mkdir(parents=True, exist_ok=True)
        self._limiter = trio.CapacityLimiter(8)
        self.corrupt: dict[CID, CorruptBlock] = {}

    def path_of(self, cid: CID) -> Path:
        return self.fs.path_of(cid)

    async def get(self, cid: CID, *, timeout: float | None = None,
                  providers: Sequence[Any] = ()) -> bytes:
        data = await self.get_local(cid)
        if data is None:
            raise self.corrupt.get(cid) or BlockNotFound(cid, self._why_missing(cid))
        return data

    def _why_missing(self, cid: CID) -> str:
        aside = self.fs.corrupt_dir / self.path_of(cid).name
        if aside.exists():
            return f"not in the local store; a corrupt copy of it was set aside as {aside}"
        return "not in the local store"

    async def get_local(self, cid: CID) -> bytes | None:
        """The block if stored here and intact; None otherwise (never the network)."""
        try:
            return await trio.to_thread.run_sync(self.fs.read, cid, limiter=self._limiter)
        except CorruptBlock as exc:
            self.corrupt[cid] = exc
            return None

    async def put(self, cid: CID, data: bytes) -> None:
        if len(data) > MAX_BLOCK_SIZE:
            raise BlockTooLarge(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")
        await trio.to_thread.run_sync(self.fs.write, cid, data, limiter=self._limiter)
        self.corrupt.pop(cid, None)

    async def put_many(self, blocks: Sequence[tuple[CID, bytes]]) -> None:
        """Store several blocks with one trip to a worker thread."""
        for _, data in blocks:
            if len(data) > MAX_BLOCK_SIZE:
                raise BlockTooLarge(f"block of {len(data)} bytes exceeds {MAX_BLOCK_SIZE}")

        def write_all() -> None:
            for cid, data in blocks:
                self.fs.write(cid, data)

        await trio.to_thread.run_sync(write_all, limiter=self._limiter)
        for cid, _ in blocks:
            self.corrupt.pop(cid, None)

    async def put_verified(self, cid: CID, data: bytes) -> None:
        if not cid.verify(data):
            raise BlockVerificationError(f"bytes do not hash to {cid}")
        await self.put(cid, data)

    async def holders(self, cids: Sequence[CID], peers: Sequence[Any], *,
                      timeout: float) -> dict[CID, set[Any]]:
        """A store without a network knows no other holders."""
        return {}

    async def has(self, cid: CID) -> bool:
        return self.path_of(cid).exists()

    def has_sync(self, cid: CID) -> bool:
        return self.path_of(cid).exists()

    async def delete(self, cid: CID) -> None:
        with contextlib.suppress(OSError):
            self.path_of(cid).unlink()

    async def verify(self, cid: CID) -> bool:
        """True if the block is present and still hashes to its CID."""
        return await self.get_local(cid) is not None

    async def pin(self, cid: CID, *, recursive: bool = True,
                  timeout: float | None = None) -> None:
        """Record a pin. A recursive pin requires the whole DAG to be local."""
        if recursive:
            missing = await self.missing(cid)
            if missing:
                raise BlockNotFound(missing[0], f"cannot pin {cid}: DAG is incomplete")
        elif not await self.has(cid):
            raise BlockNotFound(cid, "cannot pin a block that is not stored")
        self._record_pin(cid, recursive)

    def _record_pin(self, cid: CID, recursive: bool) -> None:
        (self._pins / str(cid)).write_text("recursive" if recursive else "direct")

    async def unpin(self, cid: CID) -> None:
        with contextlib.suppress(OSError):
            (self._pins / str(cid)).unlink()

    def pins(self) -> dict[CID, str]:
        out: dict[CID, str] = {}
        for entry in self._pins.iterdir():
            if entry.name.startswith("."):
                continue
            out[CID.parse(entry.name)] = entry.read_text().strip()
        return out

    async def written(self, cids: Sequence[CID]) -> None:
        """Blocks another process wrote here: nobody else to tell."""
        for cid in cids:
            self.corrupt.pop(cid, None)

    async def missing(self, root: CID) -> list[CID]:
        """Blocks of the DAG under ``root`` that are not stored here intact."""
        out = []
        stack = [root]
        seen: set[CID] = set()
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            data = await self.get_local(cid)
            if data is None:
                out.append(cid)
                continue
            stack.extend(dag_links(cid, data))
        return out
