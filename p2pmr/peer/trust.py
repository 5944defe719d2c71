"""Which masters may run code on this peer (spec section 9)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from libp2p.peer.id import ID as PeerID

__all__ = ["TRUST_FILE", "Trust", "is_peer_id"]

log = logging.getLogger(__name__)

TRUST_FILE: Final = "trusted_masters"


class Trust:
    """Which masters may run code here.

    The set is the explicit peer IDs plus those listed in the repo's
    ``trusted_masters`` file (one peer ID per line, ``#`` comments), which is
    re-read when it changes. ``trust_any`` accepts every master and is meant
    only for closed test swarms.
    """

    def __init__(self, peers: Iterable[str | PeerID] = (), *, trust_any: bool = False,
                 file: Path | None = None) -> None:
        self.trust_any = trust_any
        self._explicit = {str(p) for p in peers}
        self._file = file
        self._file_mtime: float | None = None
        self._from_file: set[str] = set()
        if trust_any:
            log.warning("TRUSTING ANY MASTER: any peer that can reach this one can run "
                        "arbitrary code on it. Use only in a closed test swarm.")

    def add(self, peer: str | PeerID) -> None:
        self._explicit.add(str(peer))

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime
        except FileNotFoundError:
            self._from_file = set()
            self._file_mtime = None
            return
        if mtime == self._file_mtime:
            return
        entries = set()
        for number, line in enumerate(self._file.read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if not is_peer_id(line):
                log.warning("%s line %d: %r is not a peer ID; ignored", self._file, number, line)
                continue
            entries.add(line)
        self._from_file = entries
        self._file_mtime = mtime

    def allows(self, peer: PeerID) -> bool:
        if self.trust_any:
            return True
        text = str(peer)
        if text in self._explicit:
            return True
        self._reload()
        return text in self._from_file

    def count(self) -> int:
        """How many masters are trusted now (0 with ``trust_any``: it lists none)."""
        self._reload()
        return len(self._explicit | self._from_file)

    def describe(self) -> str:
        if self.trust_any:
            return "any master"
        return f"{self.count()} trusted master(s)"


def is_peer_id(text: str) -> bool:
    try:
        return str(PeerID.from_base58(text)) == text
    except Exception:
        return False
