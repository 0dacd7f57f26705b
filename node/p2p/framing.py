"""Length-prefixed frames (unsigned varint length, then the body) with strict size caps and read timeouts.

The varint prefix is what go/js-libp2p use for their request/response protocols, so a peer in another
language can speak our protocols with its stock length-prefixed codec.
"""

from __future__ import annotations

import trio
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF

from node.errors import InvalidMessage

MAX_FRAME_BYTES = 1024 * 1024
_MAX_VARINT_BYTES = 10


class FrameError(InvalidMessage):
    """A frame was malformed, oversize, truncated or too slow to arrive."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode a uvarint from ``buf`` at ``pos``; return (value, new position). Raises ``FrameError``."""
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise FrameError("truncated varint")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise FrameError("non-minimal varint")
            return result, pos + i + 1
    raise FrameError("varint too long")


def encode_frame(body: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    if len(body) > max_bytes:
        raise FrameError(f"frame of {len(body)} bytes exceeds the cap of {max_bytes}")
    return encode_uvarint(len(body)) + body


async def write_frame(stream, body: bytes, *, timeout: float, max_bytes: int = MAX_FRAME_BYTES) -> None:
    data = encode_frame(body, max_bytes)
    with trio.fail_after(timeout):
        await stream.write(data)


async def read_frame(stream, *, timeout: float, max_bytes: int = MAX_FRAME_BYTES) -> bytes | None:
    """Read one frame. Return ``None`` on a clean EOF before the first byte.

    Raises ``FrameError`` when the length prefix is malformed or above ``max_bytes`` (checked before the body
    is read), when the stream ends mid-frame, or when the whole frame does not arrive within ``timeout``.
    """
    try:
        with trio.fail_after(timeout):
            length = 0
            for i in range(_MAX_VARINT_BYTES):
                b = await _read_some(stream, 1)
                if not b:
                    if i == 0:
                        return None
                    raise FrameError("stream ended inside the length prefix")
                length |= (b[0] & 0x7F) << (7 * i)
                if not b[0] & 0x80:
                    break
            else:
                raise FrameError("length prefix too long")
            if length > max_bytes:
                raise FrameError(f"frame of {length} bytes exceeds the cap of {max_bytes}")
            return await _read_exactly(stream, length)
    except trio.TooSlowError as exc:
        raise FrameError(f"no complete frame within {timeout} s") from exc


async def _read_exactly(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await _read_some(stream, n - len(buf))
        if not chunk:
            raise FrameError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read_some(stream, n: int) -> bytes:
    """``stream.read`` with EOF turned into ``b""`` (py-libp2p raises StreamEOF/StreamClosed instead)."""
    try:
        return await stream.read(n)
    except (StreamEOF, StreamClosed):
        return b""
