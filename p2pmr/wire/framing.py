"""Frames on a stream: ``uvarint(length) || Frame``, bounded twice.

A frame may not exceed ``max_size`` (checked from the length prefix, before
any allocation), and a whole frame must arrive within ``timeout`` seconds,
so a peer that trickles bytes cannot hold a stream open. Writes hold a lock
for a whole frame: py-libp2p's yamux splits one write into window-sized
frames and locks per frame, so two tasks writing to one stream could
otherwise interleave halves of their messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import trio
from libp2p.custom_types import TProtocol

from ..errors import ProtocolError
from ..network import Stream
from ..storage.varint import decode_uvarint, encode_uvarint
from .messages import Message, decode, encode

__all__ = ["TRAFFIC", "FrameReader", "FrameWriter", "MAX_FRAME_SIZE", "PROTOCOL_ID", "Traffic"]

PROTOCOL_ID: Final = TProtocol("/ipfs/mapreduce/1.0.0")
MAX_FRAME_SIZE: Final = 1024 * 1024
_READ_CHUNK: Final = 65536


@dataclass
class Traffic:
    """Bytes of this protocol through this process, for run reports and benchmarks."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0


#: The process's totals (a process is one master or one peer).
TRAFFIC: Final = Traffic()


class FrameReader:
    """Reads whole frames from a stream that may return short reads."""

    def __init__(self, stream: Stream, *, max_size: int = MAX_FRAME_SIZE) -> None:
        self.stream = stream
        self.max_size = max_size
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self.stream.read(_READ_CHUNK)
        except Exception as exc:  # a reset or broken stream, whatever the transport
            raise ProtocolError(f"stream failed: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def read(self, timeout: float) -> Message | None:
        """The next message, or None at a clean end of stream between frames."""
        with trio.move_on_after(timeout) as scope:
            return await self._read()
        assert scope.cancelled_caught
        raise ProtocolError(f"no complete frame within {timeout:g}s")

    async def _read(self) -> Message | None:
        while True:
            try:
                length, pos = decode_uvarint(self._buf)
                break
            except ValueError as exc:
                if str(exc) != "truncated uvarint" or len(self._buf) > 9:
                    raise ProtocolError(f"bad frame length prefix: {exc}") from None
            if not await self._fill():
                if self._buf:
                    raise ProtocolError("stream ended inside a frame length prefix")
                return None
        if length > self.max_size:
            raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_size}-byte limit")
        while len(self._buf) - pos < length:
            if not await self._fill():
                raise ProtocolError("stream ended inside a frame")
        payload = bytes(self._buf[pos:pos + length])
        del self._buf[:pos + length]
        TRAFFIC.bytes_in += pos + length
        TRAFFIC.frames_in += 1
        return decode(payload)


class FrameWriter:
    """Writes frames one at a time; concurrent writers never interleave."""

    def __init__(self, stream: Stream, *, timeout: float = 30.0) -> None:
        self.stream = stream
        self.timeout = timeout
        self._lock = trio.Lock()

    async def write(self, message: Message) -> None:
        payload = encode(message)
        data = encode_uvarint(len(payload)) + payload
        async with self._lock:
            try:
                with trio.fail_after(self.timeout):
                    await self.stream.write(data)
                TRAFFIC.bytes_out += len(data)
                TRAFFIC.frames_out += 1
            except trio.TooSlowError:
                raise ProtocolError(f"write did not complete within {self.timeout:g}s") from None
            except ProtocolError:
                raise
            except Exception as exc:
                raise ProtocolError(f"stream failed: {type(exc).__name__}: {exc}") from exc
