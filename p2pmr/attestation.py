"""A master's signed word about an output: that it ran the job, which peer
produced each task, and how many peers had to agree.

Spec section 6.7. The provenance record inside the output says *what* was
computed; it holds nothing that varies between equal runs, so that equal
work keeps equal CIDs. Who computed it, and who vouches for it, does vary:
that is this separate, signed document, which names the output by CID. It
is signed with the master's libp2p identity key, so anyone can check it
against the master's peer ID without asking the master.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from libp2p.crypto.keys import PrivateKey, PublicKey
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID as PeerID

from .errors import UnverifiableOutput
from .storage.cid import CID

__all__ = ["Attestation", "attest", "check_attestation"]

VERSION = 1
# Signed bytes start with this, so a signature over an attestation can never
# be taken for one over anything else the key signs (libp2p records, Noise).
DOMAIN = b"p2pmr-attestation:1\n"


@dataclass(frozen=True)
class Attestation:
    output: CID
    job: CID
    master: str                  # the signer's peer ID
    producers: dict[str, str]    # "map/3" -> the peer ID that produced it
    agreed: int                  # peers that had to agree on every task


def _signed_bytes(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def attest(private: PrivateKey, public: PublicKey, *, output: CID, job: CID,
           producers: dict[str, str], agreed: int) -> bytes:
    """The signed attestation, as JSON bytes."""
    doc: dict[str, Any] = {
        "p2pmr_attestation": VERSION, "output": str(output), "job": str(job),
        "master": str(PeerID.from_pubkey(public)),
        "public_key": base64.b64encode(public.serialize()).decode(),
        "producers": producers, "agreed": agreed}
    doc["signature"] = base64.b64encode(private.sign(_signed_bytes(doc))).decode()
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def check_attestation(data: bytes) -> Attestation:
    """The attestation in ``data``, once its signature and signer check out."""
    try:
        doc = json.loads(data)
        if doc.get("p2pmr_attestation") != VERSION:
            raise ValueError("not an attestation of version 1")
        public = deserialize_public_key(base64.b64decode(doc["public_key"]))
        signer = str(PeerID.from_pubkey(public))
        signature = base64.b64decode(doc["signature"])
        producers = {str(k): str(v) for k, v in dict(doc.get("producers", {})).items()}
        attestation = Attestation(CID.parse(doc["output"]), CID.parse(doc["job"]), signer,
                                  producers, int(doc.get("agreed", 1)))
    except (ValueError, KeyError, TypeError) as exc:
        raise UnverifiableOutput(f"not a readable attestation: {exc}") from None
    if doc.get("master") != signer:
        raise UnverifiableOutput(f"the attestation claims master {doc.get('master')}, but "
                                 f"its key is {signer}'s")
    if not public.verify(_signed_bytes(doc), signature):
        raise UnverifiableOutput(f"the attestation's signature does not check out: it was "
                                 f"not signed by {signer}, or was changed since")
    return attestation
