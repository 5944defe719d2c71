"""Small adapters over py-libp2p APIs whose failure modes we smooth over."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost, INetStream

__all__ = ["close_quietly", "protocols_of"]


async def close_quietly(stream: INetStream, *, reset: bool = False) -> None:
    """Close (or reset) a stream that may already be broken, within 2 s."""
    with trio.move_on_after(2):
        try:
            if reset:
                await stream.reset()
            else:
                await stream.close()
        except Exception:
            pass


def protocols_of(host: IHost, peer: Any) -> list[str]:
    """The protocols identify reported for ``peer``; empty if not (yet) known.

    py-libp2p's peerstore raises for a peer it has no record of, which is
    normal for a peer that connected a moment ago.
    """
    try:
        protocols = host.get_peerstore().get_protocols(peer)
    except Exception:
        return []
    return [str(p) for p in protocols or []]
