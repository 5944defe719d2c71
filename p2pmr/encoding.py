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

import io
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import msgpack

from .errors import EncodingError

__all__ = ["Codec", "MSGPACK", "PICKLE", "get_codec", "msgpack_packer", "msgpack_unpacker",
           "partition_of"]

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


def msgpack_packer() -> msgpack.Packer:
    """A packer that writes exactly what :data:`MSGPACK` writes (for spill files)."""
    return _packer()


def msgpack_unpacker(file_like: Any, read_size: int = 64 * 1024) -> msgpack.Unpacker:
    """A streaming unpacker that reads exactly what :data:`MSGPACK` reads.

    ``file_like`` only needs ``read(n)``. A reducer reads one pair of a
    partition at a time, and one pair may hold many values, so the buffer
    may grow as large as the largest pair; the worker's memory limit, not
    this, bounds it.
    """
    return msgpack.Unpacker(file_like, read_size=read_size, max_buffer_size=2**31 - 1,
                            ext_hook=_ext_hook, raw=False, strict_map_key=False,
                            use_list=True)


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
        except (EncodingError, MemoryError):
            # Running out of memory says nothing about the bytes: it must
            # reach the worker as itself, to be reported as the limit it is.
            raise
        except Exception as exc:  # any decoder failure on foreign bytes
            raise EncodingError(f"malformed {self.name} data: {exc}") from exc

    def encode_partition(self, groups: Iterable[tuple[bytes, list[Any]]]) -> bytes:
        return self.dumps([[key, values] for key, values in groups])

    def decode_partition(self, data: bytes) -> list[list[Any]]:
        """The ``[key_bytes, values]`` pairs of a partition, checked for shape and order."""
        obj = self.loads(data)
        if not isinstance(obj, list):
            raise EncodingError("a partition must be a list of [key, values] pairs")
        previous = b""
        for item in obj:
            if type(item) is not list or len(item) != 2 or type(item[1]) is not list:
                raise EncodingError("a partition must be a list of [key, values] pairs")
            kb = item[0]
            if type(kb) is not bytes or (kb <= previous and previous):
                raise EncodingError("partition keys must be bytes in strictly increasing order")
            previous = kb
        return obj


_TOP_PACKER = _packer()


def _msgpack_dumps(obj: object) -> bytes:
    # One reusable packer for top-level calls; _default packs nested tuples
    # with a packer of its own, so this one is never re-entered.
    data: bytes = _TOP_PACKER.pack(obj)
    return data


MSGPACK: Final = Codec("msgpack", _msgpack_dumps, _unpackb)
def _pickle_dumps(obj: object) -> bytes:
    # Without the memo, equal keys pickle to equal bytes whatever their object
    # identity: ("ab", "ab") is the same key whether or not both are one str.
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(obj)
    return buffer.getvalue()


PICKLE: Final = Codec("pickle", _pickle_dumps, pickle.loads)

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
                partition: Callable[[Any, int], int] | None = None,
                ) -> tuple[list[list[tuple[bytes, list[Any]]]], int, int]:
    """Group map output by key, combine it, and split it into partitions.

    Keys are grouped by their encoded bytes. ``str`` keys, by far the most
    common, are grouped in a plain dict first and encoded once each, since a
    ``str`` is only ever equal to another ``str`` of the same bytes.

    ``combine`` runs only on keys with more than one value: as in Hadoop, a
    combiner may be applied zero or more times, so it must not change keys
    and its values must be valid input to itself and to reduce.

    ``partition(key, reducers)``, the job's own partitioner if it has one,
    decides each key's reducer instead of :func:`partition_of`.

    Returns (partitions, records_in, records_out) where each partition is a
    list of (key_bytes, values) sorted by key_bytes.
    """
    by_str: dict[str, list[Any]] = {}
    groups: dict[bytes, list[Any]] = {}
    keys: dict[bytes, Any] = {}
    dumps = codec.dumps
    count = 0
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"map must yield (key, value) pairs, got {pair!r}") from None
        count += 1
        if type(key) is str:
            bucket = by_str.get(key)
            if bucket is None:
                by_str[key] = [value]
            else:
                bucket.append(value)
            continue
        kb = dumps(key)
        bucket = groups.get(kb)
        if bucket is None:
            groups[kb] = [value]
            keys[kb] = key
        else:
            bucket.append(value)
    for key, values in by_str.items():
        kb = dumps(key)
        groups[kb] = values
        keys[kb] = key
    if combine is not None:
        for kb, values in list(groups.items()):
            if len(values) < 2:
                continue
            key = keys[kb]
            combined: list[Any] = []
            for pair in combine(key, iter(values)):
                try:
                    ck, cv = pair
                except (TypeError, ValueError):
                    raise TypeError(
                        f"combine must yield (key, value) pairs, got {pair!r}") from None
                if ck is key or ck == key:
                    combined.append(cv)
                else:  # a combiner that changes keys: regroup under the new key
                    ckb = dumps(ck)
                    groups.setdefault(ckb, []).append(cv)
                    keys.setdefault(ckb, ck)
            groups[kb] = combined
    partitions: list[list[tuple[bytes, list[Any]]]] = [[] for _ in range(reducers)]
    produced = 0
    for kb in sorted(groups):
        values = groups[kb]
        if values:
            r = partition_of(kb, reducers) if partition is None else partition(keys[kb], reducers)
            partitions[r].append((kb, values))
            produced += len(values)
    return partitions, count, produced
