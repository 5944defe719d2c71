"""How keys and values travel between peers.

Intermediate partitions come from other machines, so by default they are
msgpack, which can only ever produce plain data: str, bytes, int, float,
bool, None, lists and dicts, plus two extension types of ours: tuples (so a
``(path, offset)`` key comes back as a tuple) and integers beyond 64 bits.
Pickle is available for fully trusted swarms, on an explicit opt-in by both
the master and each peer.

A partition file is one encoded list of ``[key_bytes, [value, ...]]`` pairs,
sorted by ``key_bytes`` (the key encoded alone), one pair per distinct key.
Sorting and grouping by encoded bytes makes the file, and therefore its CID,
a function of the records only, and lets reducers merge sorted runs. The
reducer for a key is ``crc32(key_bytes) mod R``.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import msgpack

from .errors import EncodingError

__all__ = ["Codec", "MSGPACK", "PICKLE", "get_codec", "partition_of"]

_EXT_TUPLE: Final = 1
_EXT_BIGINT: Final = 2
_SUPPORTED: Final = "str, bytes, int, float, bool, None, list, tuple and dict"


def _default(obj: object) -> msgpack.ExtType:
    if isinstance(obj, tuple):
        return msgpack.ExtType(_EXT_TUPLE, _packer().pack(list(obj)))
    if isinstance(obj, int):  # outside msgpack's 64-bit range
        return msgpack.ExtType(_EXT_BIGINT, str(obj).encode("ascii"))
    raise EncodingError(f"cannot encode a value of type {type(obj).__qualname__}; "
                        f"the data encoding carries {_SUPPORTED}")


def _ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_TUPLE:
        return tuple(_unpackb(data))
    if code == _EXT_BIGINT:
        return int(data.decode("ascii"))
    raise EncodingError(f"unknown msgpack extension type {code}")


def _packer() -> msgpack.Packer:
    # strict_types sends tuples (and str/int subclasses) to _default, so a
    # tuple is never silently flattened into a list.
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True)


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False,
                           use_list=True)


class Codec:
    """A named way to turn keys, values and partitions into bytes."""

    def __init__(self, name: str, dumps: Callable[[object], bytes],
                 loads: Callable[[bytes], Any]) -> None:
        self.name = name
        self._dumps = dumps
        self._loads = loads

    def dumps(self, obj: object) -> bytes:
        try:
            return self._dumps(obj)
        except EncodingError:
            raise
        except (TypeError, ValueError, OverflowError, pickle.PicklingError) as exc:
            raise EncodingError(f"cannot encode {type(obj).__qualname__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._loads(data)
        except EncodingError:
            raise
        except Exception as exc:  # any decoder failure on foreign bytes
            raise EncodingError(f"malformed {self.name} data: {exc}") from exc

    def encode_partition(self, groups: Iterable[tuple[bytes, list[Any]]]) -> bytes:
        return self.dumps([[key, values] for key, values in groups])

    def decode_partition(self, data: bytes) -> list[tuple[bytes, list[Any]]]:
        obj = self.loads(data)
        if not isinstance(obj, list):
            raise EncodingError("a partition must be a list of [key, values] pairs")
        out = []
        for item in obj:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                    or not isinstance(item[1], list)):
                raise EncodingError("a partition must be a list of [key, values] pairs")
            out.append((item[0], item[1]))
        return out


def _msgpack_dumps(obj: object) -> bytes:
    data: bytes = _packer().pack(obj)
    return data


MSGPACK: Final = Codec("msgpack", _msgpack_dumps, _unpackb)
PICKLE: Final = Codec("pickle", lambda obj: pickle.dumps(obj, protocol=5), pickle.loads)

_CODECS: Final = {"msgpack": MSGPACK, "": MSGPACK, "pickle": PICKLE}


def get_codec(name: str, *, allow_pickle: bool = False) -> Codec:
    codec = _CODECS.get(name)
    if codec is None:
        raise EncodingError(f"unknown data encoding {name!r}")
    if codec is PICKLE and not allow_pickle:
        raise EncodingError("the pickle encoding executes code when decoded and is refused "
                            "unless this peer opted in (--allow-pickle)")
    return codec


def partition_of(key_bytes: bytes, reducers: int) -> int:
    """Stable across processes and machines, unlike Python's salted hash()."""
    return zlib.crc32(key_bytes) % reducers


def group_pairs(pairs: Iterable[tuple[Any, Any]], codec: Codec, reducers: int,
                combine: Callable[[Any, Iterator[Any]], Iterable[tuple[Any, Any]]] | None = None,
                ) -> tuple[list[list[tuple[bytes, list[Any]]]], int, int]:
    """Group map output by key, combine it, and split it into partitions.

    Returns (partitions, records_in, records_out) where each partition is a
    list of (key_bytes, values) sorted by key_bytes.
    """
    groups: dict[bytes, list[Any]] = {}
    keys: dict[bytes, Any] = {}
    dumps = codec.dumps
    count = 0
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"map must yield (key, value) pairs, got {pair!r}") from None
        kb = dumps(key)
        bucket = groups.get(kb)
        if bucket is None:
            groups[kb] = [value]
            keys[kb] = key
        else:
            bucket.append(value)
        count += 1
    if combine is not None:
        combined: dict[bytes, list[Any]] = {}
        for kb, values in groups.items():
            for pair in combine(keys[kb], iter(values)):
                try:
                    ck, cv = pair
                except (TypeError, ValueError):
                    raise TypeError(
                        f"combine must yield (key, value) pairs, got {pair!r}") from None
                combined.setdefault(dumps(ck), []).append(cv)
        groups = combined
    partitions: list[list[tuple[bytes, list[Any]]]] = [[] for _ in range(reducers)]
    produced = 0
    for kb in sorted(groups):
        values = groups[kb]
        partitions[partition_of(kb, reducers)].append((kb, values))
        produced += len(values)
    return partitions, count, produced
