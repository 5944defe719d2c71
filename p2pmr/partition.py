"""Which reducer a key goes to: the job's own partitioner, and sorted ranges.

By default a key's reducer is ``crc32(key_bytes) mod R``
(:func:`p2pmr.encoding.partition_of`): it spreads keys evenly and needs
nothing but the key, but each part file then holds keys from all over the
key space. A job may define ``partition(key, n_reducers)`` returning the
reducer instead, and a job whose part files must concatenate into one
sorted whole defines ``partition = TotalOrder()``: reducer *r* then takes
the keys from boundary *r - 1* up to, not including, boundary *r*, in the
keys' natural order, the order part files are sorted in.

Good boundaries depend on the data, so, as with Hadoop's InputSampler and
TotalOrderPartitioner, they come from a sample of the input, but one chosen
without randomness: before the map phase the master maps the complete lines
of up to ``TotalOrder.blocks`` evenly spaced leaf blocks of the input with
the job's own map function, sorts the keys it yields and takes the R - 1
quantiles (spec section 6.3). The boundaries are stored in IPFS and their
CID is part of the job's identity, so the same code on the same input
always gets the same boundaries, and so the same output CID.

This module is imported by worker processes and by job files: it stays
light (no libp2p, no trio).
"""

from __future__ import annotations

import dataclasses
import operator
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .encoding import Codec
from .errors import EncodingError, JobError

__all__ = ["Partitioner", "TotalOrder", "bind_partition", "boundaries_of", "sample_indices"]

Partitioner = Callable[[Any, int], int]


@dataclass(frozen=True)
class TotalOrder:
    """Range partitions from a deterministic sample of the input.

    ``partition = TotalOrder()`` in a job file makes the concatenated part
    files one sorted sequence of keys (when reduce yields the keys it is
    given). ``blocks`` bounds the sample: the master maps the lines of at
    most that many leaf blocks (256 KiB each by default) to find the
    boundaries, so more blocks balance the parts better and cost the master
    more before the map phase starts.

    On a peer, the worker binds the boundaries the job was given
    (:meth:`bind`) before it partitions anything; an unbound ``TotalOrder``
    cannot partition.
    """

    blocks: int = 32
    boundaries: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if type(self.blocks) is not int or self.blocks < 1:
            raise JobError(f"TotalOrder(blocks=...) must be a positive int, not {self.blocks!r}")

    def bind(self, boundaries: Sequence[Any]) -> TotalOrder:
        return dataclasses.replace(self, boundaries=tuple(boundaries))

    def __call__(self, key: Any, n_reducers: int) -> int:
        if self.boundaries is None:
            raise JobError("TotalOrder has no boundaries: the master samples them before "
                           "the map phase")
        try:
            return bisect_right(self.boundaries, key)
        except TypeError as exc:
            raise TypeError(f"TotalOrder compares keys in their natural order, and the key "
                            f"{key!r} does not compare with the sampled boundaries: {exc}"
                            ) from None


def sample_indices(total: int, wanted: int) -> list[int]:
    """Which of ``total`` leaf blocks the sample reads: all, or ``wanted``
    evenly spaced ones, each the middle of its share of the input."""
    if total <= wanted:
        return list(range(total))
    return [(2 * i + 1) * total // (2 * wanted) for i in range(wanted)]


def boundaries_of(keys: list[Any], reducers: int) -> list[Any]:
    """The R - 1 quantiles of the sampled keys, in their natural order.

    Boundary *i* is the key at position ``floor(i * n / R)`` of the sorted
    sample; equal boundaries are kept (a reducer between them gets nothing),
    so there are always R - 1 of them, or none when the sample is empty.
    """
    if not keys or reducers <= 1:
        return []
    try:
        ordered = sorted(keys)
    except TypeError as exc:
        raise TypeError(f"TotalOrder sorts the keys map yields in their natural order, and "
                        f"these keys do not compare: {exc}") from None
    n = len(ordered)
    return [ordered[i * n // reducers] for i in range(1, reducers)]


def _checked(fn: Partitioner) -> Partitioner:
    """The user's partitioner, made to say clearly when it returns nonsense:
    a wrong reducer would otherwise lose keys or fail far from the cause."""

    def partition(key: Any, n_reducers: int) -> int:
        r = fn(key, n_reducers)
        if not isinstance(r, bool):
            try:
                index = operator.index(r)
            except TypeError:
                pass
            else:
                if 0 <= index < n_reducers:
                    return index
        raise ValueError(f"partition({key!r}, {n_reducers}) returned {r!r}; it must return an "
                         f"int from 0 to {n_reducers - 1}")

    return partition


def bind_partition(partition: object, boundaries: bytes | None, codec: Codec,
                   reducers: int) -> Partitioner | None:
    """The partitioner a map task uses: None for crc32, else the job's, checked.

    Raises :class:`JobError` when the job samples boundaries and the task
    carries none (the master did not understand the job), and
    :class:`EncodingError` when the boundaries file is malformed.
    """
    if partition is None:
        return None
    if isinstance(partition, TotalOrder):
        if boundaries is None:
            raise JobError("the job partitions with TotalOrder, and its assignment carries no "
                           "partition boundaries (JobSpec.boundaries)")
        keys = codec.loads(boundaries)
        if type(keys) is not list or len(keys) > reducers - 1:
            raise EncodingError(f"partition boundaries must be an array of at most "
                                f"{reducers - 1} keys")
        return _checked(partition.bind(keys))
    if not callable(partition):
        raise JobError(f"the job's partition is not callable: {partition!r}")
    return _checked(partition)
