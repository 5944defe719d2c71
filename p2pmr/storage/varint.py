"""Unsigned LEB128 varints, as multiformats (CIDs, multihashes) and libp2p
framing use them."""

from __future__ import annotations

__all__ = ["decode_uvarint", "encode_uvarint"]


def encode_uvarint(value: int) -> bytes:
    """Encode an unsigned LEB128 varint, as multiformats and libp2p framing use."""
    if value < 0:
        raise ValueError("uvarint cannot encode a negative number")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a uvarint at ``pos``; return (value, position after it).

    Rejects varints longer than 9 bytes (63 bits), which multiformats forbids,
    so hostile input can't make us build huge integers.
    """
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ValueError("truncated uvarint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                raise ValueError("uvarint is not minimally encoded")
            return result, pos
        shift += 7
        if shift >= 63:
            raise ValueError("uvarint too long")
