"""CIDs: text and binary forms, verification, and rejection of bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pmr.errors import CIDError
from p2pmr.storage.cid import CID, DAG_PB, RAW
from p2pmr.storage.varint import decode_uvarint, encode_uvarint

V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
V1_RAW_EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_parse_and_print_roundtrip() -> None:
    for text in (V0, V1_RAW_EMPTY):
        assert str(CID.parse(text)) == text
        assert CID.from_bytes(bytes(CID.parse(text))) == CID.parse(text)


def test_v0_v1_conversion_and_prefix() -> None:
    v0 = CID.parse(V0)
    assert v0.version == 0 and v0.codec == DAG_PB
    assert v0.prefix == bytes.fromhex("00701220")
    v1 = v0.to_v1()
    assert str(v1).startswith("bafy") and v1.multihash == v0.multihash
    assert CID.parse(V1_RAW_EMPTY).prefix == bytes.fromhex("01551220")


def test_other_multibases_and_paths() -> None:
    v1 = CID.parse(V1_RAW_EMPTY)
    assert CID.parse("f" + bytes(v1).hex()) == v1
    assert CID.parse("B" + str(v1)[1:].upper()) == v1
    assert CID.parse(f"/ipfs/{V0}/some/path") == CID.parse(V0)


def test_hash_and_verify() -> None:
    cid = CID.hash(b"", version=1, codec=RAW)
    assert str(cid) == V1_RAW_EMPTY
    assert cid.verify(b"") and not cid.verify(b"x")


@pytest.mark.parametrize("bad", ["", "Qm", "QmNotACid", "bafyXXXX", "zzz", "x" * 46, "notacid"])
def test_bad_text_is_a_clear_error(bad: str) -> None:
    with pytest.raises(CIDError):
        CID.parse(bad)


@given(st.binary(max_size=80))
def test_binary_parser_never_crashes(raw: bytes) -> None:
    try:
        CID.from_bytes(raw)
    except CIDError:
        pass


@given(st.integers(0, 2**63 - 1))
def test_uvarint_roundtrip(n: int) -> None:
    encoded = encode_uvarint(n)
    assert decode_uvarint(encoded) == (n, len(encoded))


def test_uvarint_rejects_overlong_and_non_minimal() -> None:
    with pytest.raises(ValueError):
        decode_uvarint(b"\xff" * 10 + b"\x01")
    with pytest.raises(ValueError):
        decode_uvarint(b"\x80\x00")
