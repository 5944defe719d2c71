"""A delaying TCP relay, for the swarm lab's emulated wide-area links.

Kernels without ``netem`` cannot add latency with ``tc``. So in each of the
lab's network namespaces, an nftables rule redirects every TCP connection
the namespace opens towards the lab's network to this relay, which reads
the connection's original destination (``SO_ORIGINAL_DST``), connects there
(its own socket marked, so the rule lets it through), and passes bytes on
in both directions, each chunk held until ``delay`` after it arrived. The
delay of a connection is this node's link delay plus the destination's, so
the round trip between two nodes is twice the sum of their one-way delays,
as through two access links. Bandwidth is left to ``tc tbf`` on the links.

    python scripts/lab_relay.py --port 7000 --mark 1 --me 10.77.0.2 --delays DELAYS.json

``DELAYS.json`` maps every node's address to its one-way delay in ms, this
node's included; the lab rewrites it as nodes join, and it is read afresh
for each connection.

It prints ``ready`` once it listens, and runs until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys

import trio

SO_ORIGINAL_DST = 80
CHUNK = 64 * 1024
QUEUE = 512  # chunks in flight per direction: enough for 100 Mbit/s x 200 ms


def original_destination(sock: trio.socket.SocketType) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


async def pump(source: trio.SocketStream, sink: trio.SocketStream, delay: float) -> None:
    """Carry one direction, each chunk ``delay`` seconds late; then pass the EOF on."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUE)

    async def read() -> None:
        async with send:
            while True:
                data = await source.receive_some(CHUNK)
                if not data:
                    return
                await send.send((trio.current_time() + delay, data))

    async def write() -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                await sink.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


def read_delays(path: str) -> dict[str, float]:
    try:
        with open(path) as handle:
            return {k: float(v) for k, v in json.load(handle).items()}
    except (OSError, ValueError):
        return {}


async def relay(inbound: trio.SocketStream, mark: int, me: str, delays_file: str) -> None:
    try:
        delays = read_delays(delays_file)
        own = delays.get(me, 0.0)
        host, port = original_destination(inbound.socket)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        with trio.fail_after(20):
            await sock.connect((host, port))
        outbound = trio.SocketStream(sock)
        delay = (own + delays.get(host, 0.0)) / 1000
        async with inbound, outbound, trio.open_nursery() as nursery:
            nursery.start_soon(pump, inbound, outbound, delay)
            nursery.start_soon(pump, outbound, inbound, delay)
    except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        with contextlib.suppress(Exception):
            await inbound.aclose()


async def main(args: argparse.Namespace) -> None:
    listeners = await trio.open_tcp_listeners(args.port, host="127.0.0.1")
    print("ready", flush=True)
    await trio.serve_listeners(
        lambda stream: relay(stream, args.mark, args.me, args.delays), listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mark", type=int, default=1)
    parser.add_argument("--me", required=True, help="this node's address")
    parser.add_argument("--delays", required=True, help="a JSON file: delays by address, ms")
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        sys.exit(0)
