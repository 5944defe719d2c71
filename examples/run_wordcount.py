"""Word count with the library, as the original design used it.

Each peer is a node that calls ``register_protocol(node)``; the script then
creates a master with ``InitMaster(...)``, starts it with ``.run()``, and
polls ``get_map_status()`` / ``get_reduce_status()`` every second while it
runs. Everything runs here on 127.0.0.1; the map and reduce functions still
execute in separate worker processes, never in this one.

    python examples/run_wordcount.py [INPUT_DIR] [PEERS] [REDUCERS]
"""

import sys
import tempfile
from pathlib import Path

import trio
import wordcount  # examples/wordcount.py; pickled by value, so peers need no copy

import p2pmr

HERE = Path(__file__).resolve().parent


async def main(input_dir: Path, n_peers: int, n_reducers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with p2pmr.open_node(Path(tmp) / "master") as master_node:
            data_cid = await master_node.add_path(input_dir)
            print(f"input {input_dir} is {data_cid}")
            async with trio.open_nursery() as nursery:
                for i in range(n_peers):
                    nursery.start_soon(run_peer, Path(tmp) / f"peer-{i}", master_node)

                master = p2pmr.InitMaster(master_node, data_cid, wordcount.map,
                                          wordcount.reduce, n_reducers,
                                          combine_fn=wordcount.combine)

                async def poll() -> None:
                    while True:
                        print(f"map: {master.get_map_status()}   "
                              f"reduce: {master.get_reduce_status()}")
                        await trio.sleep(1)

                nursery.start_soon(poll)
                output = await master.run()
                print(f"map: {master.get_map_status()}   reduce: {master.get_reduce_status()}")
                print(f"output: {output}")
                top = await top_words(master_node, output, 10)
                print("top words:", ", ".join(f"{w} ({n})" for w, n in top))
                nursery.cancel_scope.cancel()


async def run_peer(repo: Path, master_node: p2pmr.Node) -> None:
    async with p2pmr.open_node(repo, bootstrap=[master_node.multiaddrs[0]]) as node:
        # A peer runs code only for masters it trusts.
        p2pmr.register_protocol(node, trust=[master_node.peer_id], workers=1)
        await trio.sleep_forever()


async def top_words(node: p2pmr.Node, output: p2pmr.CID, n: int) -> list[tuple[str, int]]:
    from p2pmr.storage import unixfs

    counts = []
    for entry in await unixfs.list_directory(node.blocks, output):
        if entry.name.startswith("part-"):
            text = (await unixfs.read_range(node.blocks, entry.cid)).decode()
            for line in text.splitlines():
                word, count = line.split("\t")
                counts.append((word, int(count)))
    return sorted(counts, key=lambda wc: -wc[1])[:n]


if __name__ == "__main__":
    input_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "data" / "gutenberg"
    peers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    reducers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    trio.run(main, input_dir, peers, reducers)
