"""Errors from inside nurseries reach callers as the types they catch."""

from __future__ import annotations

import pytest
import trio

from p2pmr.errors import BlockNotFound, JobFailed, StorageError, UnixFSError, collapsed
from p2pmr.localswarm import local_swarm
from p2pmr.node import open_node
from p2pmr.storage.cid import CID


async def _fail(exc: BaseException) -> None:
    raise exc


async def _run(*errors: BaseException) -> None:
    with collapsed():
        async with trio.open_nursery() as nursery:
            for exc in errors:
                nursery.start_soon(_fail, exc)


async def test_one_error_or_one_kind_leaves_as_itself() -> None:
    ghost = CID.hash(b"ghost")
    with pytest.raises(BlockNotFound):
        await _run(BlockNotFound(ghost, "gone"))
    with pytest.raises(BlockNotFound):  # siblings failing at once, the same way
        await _run(BlockNotFound(ghost, "gone"), BlockNotFound(ghost, "also gone"))


async def test_different_errors_stay_grouped() -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        await _run(StorageError("disk"), UnixFSError("format"))
    assert {type(e) for e in info.value.exceptions} == {StorageError, UnixFSError}


async def test_cancellation_is_untouched() -> None:
    with trio.move_on_after(0.01) as scope:
        with collapsed():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_errors_in_a_node_block_reach_the_caller_as_themselves(tmp_path) -> None:
    """`try: async with open_node(): ... except JobFailed` must work, as the
    README's library example does it."""
    with pytest.raises(JobFailed, match="as itself"):
        async with open_node(tmp_path / "node") as node, \
                local_swarm(1, tmp_path / "peers", node.multiaddrs[0], str(node.peer_id),
                            workers=1):
            raise JobFailed("as itself")


def test_every_error_class_is_raised_somewhere() -> None:
    """An exported error class that nothing raises is a promise nobody keeps."""
    import re
    from pathlib import Path

    from p2pmr import errors

    source = "\n".join(p.read_text() for p in Path(errors.__file__).parent.rglob("*.py")
                       if p.name != "errors.py" and "_pb" not in p.parts)
    bases = {"P2PMRError"}  # raised only through its subclasses, by design
    for name in errors.__all__:
        if name[0].isupper() and name not in bases:
            assert re.search(rf"\b{name}\(", source), f"{name} is never raised"
