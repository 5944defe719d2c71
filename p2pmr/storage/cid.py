"""Content identifiers.

A small immutable CID value type. It is ours rather than py-cid's because the
whole system passes CIDs through hot paths (dict keys, wire messages, block
checks) and needs three things exactly as IPFS tools do them: the text form
Kubo prints (base58btc for v0, base32 for v1), hashing of a block to its CID,
and verification of received bytes against a CID.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Final

import base58

from ..errors import CIDError
from .varint import decode_uvarint, encode_uvarint

__all__ = ["CID", "DAG_CBOR", "DAG_PB", "RAW", "SHA2_256"]

DAG_PB: Final = 0x70
RAW: Final = 0x55
DAG_CBOR: Final = 0x71
LIBP2P_KEY: Final = 0x72

IDENTITY: Final = 0x00
SHA2_256: Final = 0x12
SHA2_512: Final = 0x13
BLAKE2B_256: Final = 0xB220

_HASHERS: dict[int, tuple[Callable[[bytes], bytes], int]] = {
    SHA2_256: (lambda data: hashlib.sha256(data).digest(), 32),
    SHA2_512: (lambda data: hashlib.sha512(data).digest(), 64),
    BLAKE2B_256: (lambda data: hashlib.blake2b(data, digest_size=32).digest(), 32),
}

_CODEC_NAMES: Final = {DAG_PB: "dag-pb", RAW: "raw", DAG_CBOR: "dag-cbor", LIBP2P_KEY: "libp2p-key"}

# Longest identity digest we accept; inlined blocks are tiny by convention.
_MAX_IDENTITY_DIGEST: Final = 128


class CID:
    """An immutable, hashable CID (version 0 or 1)."""

    __slots__ = ("_bytes", "_codec", "_digest", "_hash_code", "_str", "_version")

    _version: int
    _codec: int
    _hash_code: int
    _digest: bytes
    _bytes: bytes
    _str: str | None

    def __init__(self, version: int, codec: int, hash_code: int, digest: bytes) -> None:
        if version == 0:
            if codec != DAG_PB or hash_code != SHA2_256 or len(digest) != 32:
                raise CIDError("a CIDv0 is always dag-pb with a 32-byte sha2-256 digest")
        elif version != 1:
            raise CIDError(f"unsupported CID version {version}")
        if hash_code == IDENTITY:
            if len(digest) > _MAX_IDENTITY_DIGEST:
                raise CIDError("identity CID is too long")
        elif hash_code not in _HASHERS:
            raise CIDError(f"unsupported multihash function 0x{hash_code:x}")
        elif len(digest) != _HASHERS[hash_code][1]:
            raise CIDError("multihash digest has the wrong length")
        object.__setattr__(self, "_version", version)
        object.__setattr__(self, "_codec", codec)
        object.__setattr__(self, "_hash_code", hash_code)
        object.__setattr__(self, "_digest", bytes(digest))
        mh = encode_uvarint(hash_code) + encode_uvarint(len(digest)) + digest
        raw = mh if version == 0 else b"\x01" + encode_uvarint(codec) + mh
        object.__setattr__(self, "_bytes", raw)
        object.__setattr__(self, "_str", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CID is immutable")

    # -- construction ---------------------------------------------------

    @classmethod
    def hash(cls, data: bytes | bytearray | memoryview, *, version: int = 0,
             codec: int = DAG_PB, hash_code: int = SHA2_256) -> CID:
        """The CID of a block with these bytes."""
        if hash_code == IDENTITY:
            return cls(version, codec, IDENTITY, bytes(data))
        hasher = _HASHERS.get(hash_code)
        if hasher is None:  # e.g. a block prefix from the network
            raise CIDError(f"unsupported multihash function 0x{hash_code:x}")
        return cls(version, codec, hash_code, hasher[0](bytes(data)))

    @classmethod
    def parse(cls, value: str | bytes | CID) -> CID:
        """Parse a CID from its text form, its binary form, or an ``/ipfs/`` path."""
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if not isinstance(value, str):
            raise CIDError(f"expected a CID, got {type(value).__name__}")
        text = value.strip()
        if text.startswith("/ipfs/"):
            text = text[len("/ipfs/"):].split("/", 1)[0]
        if not text:
            raise CIDError("empty CID")
        try:
            if len(text) == 46 and text.startswith("Qm"):
                return cls.from_bytes(base58.b58decode(text))
            raw = _multibase_decode(text)
        except CIDError:
            raise
        except Exception as exc:  # base decoders raise assorted types
            raise CIDError(f"not a valid CID: {value!r}") from exc
        cid = cls.from_bytes(raw)
        if cid.version == 0:
            raise CIDError(f"a CIDv0 must be written in base58btc: {value!r}")
        return cid

    @classmethod
    def from_bytes(cls, raw: bytes) -> CID:
        """Parse the binary form, rejecting trailing bytes."""
        cid, end = cls.read(raw, 0)
        if end != len(raw):
            raise CIDError("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, raw: bytes | memoryview, pos: int) -> tuple[CID, int]:
        """Read one binary CID starting at ``pos``; return it and the end offset."""
        try:
            if len(raw) - pos >= 34 and raw[pos] == 0x12 and raw[pos + 1] == 0x20:
                return cls(0, DAG_PB, SHA2_256, bytes(raw[pos + 2:pos + 34])), pos + 34
            version, pos = decode_uvarint(raw, pos)
            if version != 1:
                raise CIDError(f"unsupported CID version {version}")
            codec, pos = decode_uvarint(raw, pos)
            hash_code, pos = decode_uvarint(raw, pos)
            length, pos = decode_uvarint(raw, pos)
        except ValueError as exc:
            raise CIDError(f"malformed binary CID: {exc}") from exc
        if pos + length > len(raw):
            raise CIDError("truncated CID digest")
        return cls(1, codec, hash_code, bytes(raw[pos:pos + length])), pos + length

    # -- properties ------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def codec(self) -> int:
        return self._codec

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES.get(self._codec, f"0x{self._codec:x}")

    @property
    def hash_code(self) -> int:
        return self._hash_code

    @property
    def digest(self) -> bytes:
        return self._digest

    @property
    def multihash(self) -> bytes:
        return encode_uvarint(self._hash_code) + encode_uvarint(len(self._digest)) + self._digest

    @property
    def prefix(self) -> bytes:
        """The Bitswap 1.1+ block prefix: version, codec, hash code, digest length.

        A CIDv0 has the prefix ``00 70 12 20`` (version 0, dag-pb, sha2-256, 32).
        """
        return (encode_uvarint(self._version) + encode_uvarint(self._codec)
                + encode_uvarint(self._hash_code) + encode_uvarint(len(self._digest)))

    def __bytes__(self) -> bytes:
        return self._bytes

    def to_v1(self) -> CID:
        return self if self._version == 1 else CID(1, self._codec, self._hash_code, self._digest)

    # -- verification ----------------------------------------------------

    def verify(self, data: bytes | bytearray | memoryview) -> bool:
        """True if ``data`` hashes to this CID's multihash."""
        if self._hash_code == IDENTITY:
            return bytes(data) == self._digest
        return _HASHERS[self._hash_code][0](bytes(data)) == self._digest

    # -- text --------------------------------------------------------------

    def __str__(self) -> str:
        text = self._str
        if text is None:
            if self._version == 0:
                text = base58.b58encode(self._bytes).decode("ascii")
            else:
                text = "b" + base64.b32encode(self._bytes).decode("ascii").lower().rstrip("=")
            object.__setattr__(self, "_str", text)
        return text

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and self._bytes == other._bytes

    def __lt__(self, other: CID) -> bool:
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return (CID.from_bytes, (self._bytes,))


def _multibase_decode(text: str) -> bytes:
    prefix, body = text[0], text[1:]
    if prefix == "b":
        return _b32(body.upper())
    if prefix == "B":
        return _b32(body)
    if prefix == "z":
        return base58.b58decode(body)
    if prefix in "fF":
        return bytes.fromhex(body)
    if prefix == "u":
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    if prefix == "m":
        return base64.b64decode(body + "=" * (-len(body) % 4))
    raise CIDError(f"unsupported multibase prefix {prefix!r} in {text!r}")


def _b32(body: str) -> bytes:
    return base64.b32decode(body + "=" * (-len(body) % 8))
