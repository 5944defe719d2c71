"""A job's output directory on local disk (``p2pmr run --output DIR``).

The directory ends up holding exactly the output's files. Stale parts of
an earlier run with more reducers must never sit beside this run's, where
``cat DIR/part-*`` would count them in. So the files are written into a new
sibling directory and swapped in with one rename (``renameat2`` with
``RENAME_EXCHANGE`` where the kernel has it): a reader sees the old output
or the new one, never a mixture, and a run that fails half-way leaves the
old output untouched.

A previous output is recognised by its ``_manifest.json``; any other
non-empty directory is refused unless the caller says to overwrite it, and
that is checked before the job runs, not after.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from .errors import JobError
from .storage import unixfs
from .storage.cid import CID

if TYPE_CHECKING:
    from .node import Node

__all__ = ["check_output_dir", "is_output_dir", "write_output"]

log = logging.getLogger(__name__)

MANIFEST: Final = "_manifest.json"
PROVENANCE: Final = "_provenance.json"
_AT_FDCWD: Final = -100
_RENAME_EXCHANGE: Final = 2


def is_output_dir(path: Path) -> bool:
    """True if ``path`` holds a p2pmr output: a manifest of ours and parts."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("p2pmr") != 1:
        return False
    return all(p.name in (MANIFEST, PROVENANCE) or p.name.startswith("part-")
               for p in path.iterdir())


def check_output_dir(path: Path, *, overwrite: bool = False) -> None:
    """Refuse an output directory whose contents a run must not replace."""
    if not path.exists():
        return
    if not path.is_dir():
        raise JobError(f"{path} exists and is not a directory")
    if overwrite or not any(path.iterdir()) or is_output_dir(path):
        return
    raise JobError(f"{path} is not empty and holds something other than a p2pmr output; "
                   f"choose another directory, or give --overwrite to replace its contents")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step; False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # an old kernel or a filesystem without it
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` where ``target`` is; the old contents end up in ``staging``.

    A directory that cannot be renamed (a mount point, say, as with
    ``docker run -v $PWD/out:/out``, or the working directory) has its
    contents replaced instead, file by file: not in one step, but never
    leaving old parts beside new ones.
    """
    # A mount point cannot move, and the working directory must not.
    fixed = target.exists() and (os.path.ismount(target) or target.samefile(Path.cwd()))
    try:
        if not target.exists():
            os.rename(staging, target)
            return
        if not fixed and _exchange(staging, target):
            return
        if not fixed:
            aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
            os.rename(target, aside)
            os.rename(staging, target)
            os.rename(aside, staging)
            return
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES,
                             errno.EINVAL):
            raise
    _replace_contents(staging, target)


def _replace_contents(staging: Path, target: Path) -> None:
    old = staging / f".old-{secrets.token_hex(4)}"
    old.mkdir()
    for entry in list(target.iterdir()):
        shutil.move(entry, old / entry.name)
    for entry in list(staging.iterdir()):
        if entry != old:
            shutil.move(entry, target / entry.name)


async def write_output(node: Node, root: CID, directory: Path, *,
                       overwrite: bool = False) -> list[Path]:
    """Copy an output directory's files from IPFS to ``directory``, replacing it whole."""
    check_output_dir(directory, overwrite=overwrite)  # again: it may have changed since
    directory = Path(await trio.Path(directory).absolute())
    await trio.Path(directory.parent).mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.partial-{secrets.token_hex(4)}")
    await trio.Path(staging).mkdir()
    try:
        names = []
        for entry in await unixfs.list_directory(node.blocks, root):
            # Streamed block by block: a part may be larger than memory.
            async with await trio.open_file(staging / entry.name, "wb") as handle:

                async def write(piece: bytes, handle: Any = handle) -> None:
                    await handle.write(piece)

                await unixfs.cat(node.blocks, entry.cid, write)
            names.append(entry.name)
        await trio.to_thread.run_sync(_swap_in, staging, directory)
    except OSError as exc:
        raise JobError(f"cannot write the output to {directory}: {exc} (the output is "
                       f"still in the repo: `p2pmr cat {root}`)") from exc
    finally:
        with trio.CancelScope(shield=True), contextlib.suppress(OSError):
            await trio.to_thread.run_sync(shutil.rmtree, staging)
    return [directory / name for name in names]
