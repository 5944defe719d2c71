"""Blocks and the formats built on them: everything p2pmr keeps in IPFS.

One module per concept: :mod:`.varint` and :mod:`.cid` (multiformats),
:mod:`.dagpb` (the node format), :mod:`.unixfs` (files and directories,
Kubo-identical), :mod:`.base` (the :class:`~.base.BlockStore` interface),
:mod:`.flatfs` (blocks on local disk), :mod:`.bitswap` (block exchange),
and the two backends a node runs on, :mod:`.embedded` and :mod:`.kubo`.

Nothing is imported here: worker processes use the light modules (cid,
unixfs, flatfs) without loading libp2p.
"""
