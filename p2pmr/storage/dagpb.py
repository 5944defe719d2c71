"""The dag-pb codec, byte-compatible with Kubo.

Hand-written rather than generated, because byte identity with Kubo depends
on details a generic protobuf encoder gets "wrong": go-merkledag writes the
Links (field 2) *before* Data (field 1), and writes ``Name`` even when it is
the empty string. The decoder is strict about wire types and lengths, since
it reads blocks from untrusted peers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import CIDError, DagPBError
from .cid import CID
from .varint import decode_uvarint, encode_uvarint

__all__ = ["PBLink", "PBNode", "decode_node", "encode_node", "iter_fields"]

_VARINT: Final = 0
_LEN: Final = 2


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: CID
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def _len_field(number: int, payload: bytes) -> bytes:
    return encode_uvarint(number << 3 | _LEN) + encode_uvarint(len(payload)) + payload


def encode_link(link: PBLink) -> bytes:
    out = _len_field(1, bytes(link.cid))
    if link.name is not None:
        out += _len_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += encode_uvarint(3 << 3 | _VARINT) + encode_uvarint(link.tsize)
    return out


def encode_node(links: tuple[PBLink, ...] | list[PBLink], data: bytes | None) -> bytes:
    """Serialise a node exactly as Kubo does: links first, then data."""
    parts = [_len_field(2, encode_link(link)) for link in links]
    if data is not None:
        parts.append(_len_field(1, data))
    return b"".join(parts)


def iter_fields(buf: bytes | memoryview, what: str) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into (field number, wire type, value).

    Only varint and length-delimited fields exist in dag-pb and UnixFS; any
    other wire type, or a length running past the end, is an error.
    """
    view = memoryview(buf)
    fields: list[tuple[int, int, int | memoryview]] = []
    pos, end = 0, len(view)
    try:
        while pos < end:
            key, pos = decode_uvarint(view, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise DagPBError(f"malformed {what}: field number 0")
            if wire == _VARINT:
                value, pos = decode_uvarint(view, pos)
                fields.append((number, wire, value))
            elif wire == _LEN:
                length, pos = decode_uvarint(view, pos)
                if pos + length > end:
                    raise DagPBError(f"malformed {what}: field runs past the end")
                fields.append((number, wire, view[pos:pos + length]))
                pos += length
            else:
                raise DagPBError(f"malformed {what}: unexpected wire type {wire}")
    except ValueError as exc:
        raise DagPBError(f"malformed {what}: {exc}") from exc
    return fields


def _decode_link(buf: memoryview) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    for number, wire, value in iter_fields(buf, "dag-pb link"):
        if number == 1 and wire == _LEN and isinstance(value, memoryview):
            try:
                cid = CID.from_bytes(bytes(value))
            except CIDError as exc:
                raise DagPBError(f"dag-pb link has a bad CID: {exc}") from exc
        elif number == 2 and wire == _LEN and isinstance(value, memoryview):
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DagPBError("dag-pb link name is not UTF-8") from exc
        elif number == 3 and wire == _VARINT and isinstance(value, int):
            tsize = value
        else:
            raise DagPBError(f"dag-pb link has unexpected field {number}")
    if cid is None:
        raise DagPBError("dag-pb link without a hash")
    return PBLink(cid, name, tsize)


def decode_node(block: bytes | memoryview) -> PBNode:
    """Parse a dag-pb block. Accepts links and data in either order."""
    links: list[PBLink] = []
    data: bytes | None = None
    for number, wire, value in iter_fields(block, "dag-pb node"):
        if number == 2 and wire == _LEN and isinstance(value, memoryview):
            links.append(_decode_link(value))
        elif number == 1 and wire == _LEN and isinstance(value, memoryview):
            if data is not None:
                raise DagPBError("dag-pb node has two Data fields")
            data = bytes(value)
        else:
            raise DagPBError(f"dag-pb node has unexpected field {number}")
    return PBNode(tuple(links), data)
