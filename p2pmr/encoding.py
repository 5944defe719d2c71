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
import reprlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any, Final

import msgpack

from .errors import EncodingError, UnencodableRecord

__all__ = ["Codec", "MSGPACK", "PICKLE", "get_codec", "msgpack_packer", "msgpack_unpacker",
           "partition_of"]

_EXT_TUPLE: Final = 1
_EXT_BIGINT: Final = 2
_SUPPORTED: Final = "str, bytes, int, float, bool, None, list, tuple and dict"
_SCALARS: Final = frozenset({bytes, float, type(None)})


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

    def encode_partition(self, groups: Sequence[tuple[bytes, list[Any]]]) -> bytes:
        """A partition's bytes; a value that cannot be encoded is named with its key.

        The keys were encoded already (they are bytes here), so what fails is
        a value, and map yielded it: combine's are checked as it yields them.
        A sequence, not any iterable: it is read again to find that value.
        """
        try:
            return self.dumps([[key, values] for key, values in groups])
        except EncodingError as exc:
            for kb, values in groups:
                for value in values:
                    try:
                        self.dumps(value)
                    except EncodingError as cause:
                        raise unencodable(self, "map", cause, value,
                                          key=self.loads(kb)) from cause
            raise exc

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


def _at_fault(obj: object, depth: int = 0) -> object:
    """The part of ``obj`` that msgpack cannot carry: ``obj`` itself, or
    the first such value inside its lists, tuples and dicts; ``obj`` if
    there seems to be none (nesting too deep, say)."""
    kind = type(obj)
    if kind in _SCALARS or isinstance(obj, int):  # int subclasses travel as big ints
        return None
    if kind is str:
        return obj if _bad_utf8(str(obj)) else None
    if depth >= 64:
        return obj
    items: Iterable[object]
    if kind is list or isinstance(obj, tuple):  # tuple subclasses travel as tuples
        items = obj  # type: ignore[assignment]
    elif kind is dict:
        items = chain.from_iterable(obj.items())  # type: ignore[attr-defined]
    else:
        return obj
    for item in items:
        found = _at_fault(item, depth + 1)
        if found is not None:
            return found
    return None


def _bad_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _a(obj: object) -> str:
    """"a set", "an int64", "a str that is not valid UTF-8"."""
    name = type(obj).__qualname__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(obj, str):
        return f"{article} {name} that is not valid UTF-8 (a lone surrogate)"
    return f"{article} {name}"


def unencodable(codec: Codec, function: str, cause: EncodingError, obj: object, *,
                key: object = None, is_key: bool = False) -> UnencodableRecord:
    """The error for a key or value ``obj`` yielded by ``function`` that ``codec``
    refused: one line naming the key, the type at fault and the way out."""
    shown = _repr(obj if is_key else key)
    if codec is not MSGPACK:
        what = f"the key {shown}" if is_key else f"{_a(obj)} as the value for key {shown}"
        return UnencodableRecord(function, f"yielded {what}, which the {codec.name} encoding "
                                           f"cannot carry ({cause.__cause__ or cause})")
    fault = _at_fault(obj)
    fault = obj if fault is None else fault
    inside = "" if fault is obj else f"{_a(obj)} holding "
    what = f"the key {shown}, {inside}{_a(fault)}" if is_key else \
        f"{inside}{_a(fault)} as the value for key {shown}"
    return UnencodableRecord(
        function, f"yielded {what}, which msgpack cannot encode: yield only {_SUPPORTED} "
                  f"(or run with --encoding pickle; remote peers then need --allow-pickle)")


def _repr(obj: object) -> str:
    """A short repr, for a message that must stay one line."""
    try:
        return reprlib.repr(obj)
    except Exception:  # a job's own __repr__ may raise
        return f"<{type(obj).__qualname__}>"


def partition_of(key_bytes: bytes, reducers: int) -> int:
    """Stable across processes and machines, unlike Python's salted hash()."""
    return zlib.crc32(key_bytes) % reducers


def _key_bytes(codec: Codec, function: str, key: object) -> bytes:
    """A key's bytes; an error that names ``function`` if it cannot be encoded
    (a ``str`` that is not valid UTF-8 is the only such ``str``)."""
    try:
        return codec.dumps(key)
    except EncodingError as exc:
        raise unencodable(codec, function, exc, key, is_key=True) from exc


def _combine(combine: Callable[[Any, Iterator[Any]], Iterable[tuple[Any, Any]]],
             codec: Codec, groups: dict[bytes, list[Any]], keys: dict[bytes, Any]) -> None:
    """Run the combiner on each key of ``groups`` with more than one value, in place."""
    for kb, values in list(groups.items()):
        if len(values) < 2:
            continue
        key = keys[kb]
        combined: list[Any] = []
        for pair in combine(key, iter(values)):
            try:
                ck, cv = pair
            except (TypeError, ValueError):
                raise TypeError(f"combine must yield (key, value) pairs, got {pair!r}") from None
            _check_combined(codec, ck, cv)
            if ck is key or ck == key:
                combined.append(cv)
            else:  # a combiner that changes keys: regroup under the new key
                ckb = _key_bytes(codec, "combine", ck)
                groups.setdefault(ckb, []).append(cv)
                keys.setdefault(ckb, ck)
        groups[kb] = combined


def _check_combined(codec: Codec, key: object, value: object) -> None:
    """Refuse a value combine yields that cannot be encoded, blaming combine.

    Its values are encoded with map's, later; checked here, an error names
    the right function. Scalars, the usual result of a combiner, cost a
    type test.
    """
    if type(value) in _SCALARS or type(value) is int:
        return
    try:
        codec.dumps(value)
    except EncodingError as exc:
        raise unencodable(codec, "combine", exc, value, key=key) from exc


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
        try:
            kb = dumps(key)
        except EncodingError as exc:
            raise unencodable(codec, "map", exc, key, is_key=True) from exc
        bucket = groups.get(kb)
        if bucket is None:
            groups[kb] = [value]
            keys[kb] = key
        else:
            bucket.append(value)
    for key, values in by_str.items():
        kb = _key_bytes(codec, "map", key)
        groups[kb] = values
        keys[kb] = key
    if combine is not None:
        _combine(combine, codec, groups, keys)
    partitions: list[list[tuple[bytes, list[Any]]]] = [[] for _ in range(reducers)]
    produced = 0
    for kb in sorted(groups):
        values = groups[kb]
        if values:
            r = partition_of(kb, reducers) if partition is None else partition(keys[kb], reducers)
            partitions[r].append((kb, values))
            produced += len(values)
    return partitions, count, produced
