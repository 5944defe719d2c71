"""The ``/ipfs/mapreduce/1.0.0`` wire protocol, and nothing else.

Specified in ``protocols/mapreduce.md`` and ``protocols/mapreduce.proto``.
Following rust-libp2p's split of a protocol, this package is the *wire
format* only: :mod:`.framing` (length-prefixed frames, bounded in size and
time), :mod:`.messages` (typed messages, converted to and from the
generated protobuf module, which nothing outside this package touches),
:mod:`.codes` (the error codes, shared with worker processes) and
:mod:`.validation` (what a well-formed assignment is). The *policy* and the
*per-stream handling* live with the master (:mod:`p2pmr.master`) and the
peer (:mod:`p2pmr.peer`).
"""
