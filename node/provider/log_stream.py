"""A running job's output on its way to the consumer: bounded, rate-limited chunks cut on UTF-8 boundaries.

The executor hands output over as it comes (``on_output``); :meth:`LogStream.feed` never blocks it: bytes are
decoded incrementally (a multi-byte character split between two reads is joined; bytes that are not UTF-8
become U+FFFD) and buffered. When the buffer holds :data:`MAX_BUFFERED_BYTES`, further output is dropped and
counted; the next chunk sent says how many bytes were dropped before it. One sender task sends chunks of at most
:data:`~node.protocol.lease_messages.MAX_LOG_CHUNK_BYTES` bytes, in order, each acknowledged before the next, at
most ``rate_bytes_per_s`` on average. A chunk that cannot be delivered after a few tries is dropped (counted):
output is best-effort and never holds up the lease.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from node.protocol.lease_messages import MAX_LOG_CHUNK_BYTES

log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 1024 * 1024
DEFAULT_RATE_BYTES_PER_S = 8 * 1024 * 1024
SEND_ATTEMPTS = 3

Send = Callable[[int, str, int], Awaitable[bool]]  # (seq, text, dropped) -> delivered


def cut_utf8(text: str, max_bytes: int) -> tuple[str, str]:
    """``text`` split into a head of at most ``max_bytes`` UTF-8 bytes (whole characters) and the rest."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text, ""
    cut = max_bytes
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # do not split a character
        cut -= 1
    head = raw[:cut].decode("utf-8")
    return head, text[len(head):]


def resumed_first_seq(now_ms: int) -> int:
    """The first ``seq`` of a job's output once a restarted provider took the job over: ``unix seconds << 20``.

    The consumer keeps the first chunk of each seq, so a resumed stream must not reuse one, and the provider does
    not store what it sent. A run of the node sends far fewer than 2**20 chunks per second it runs (each waits
    for the previous one's ack), so every seq it used lies below the next run's start; the values stay below
    2**53 (exact as JSON numbers everywhere). A wall clock set back between two runs can make chunks collide
    (the consumer then keeps the earlier one): output is best-effort."""
    return (max(0, now_ms) // 1000) << 20


class LogStream:
    def __init__(self, send: Send, *, max_buffered: int = MAX_BUFFERED_BYTES,
                 rate_bytes_per_s: float = DEFAULT_RATE_BYTES_PER_S, chunk_bytes: int = MAX_LOG_CHUNK_BYTES,
                 first_seq: int = 0) -> None:
        self._send = send
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._buffered = 0  # UTF-8 bytes in _parts
        self._max = max_buffered
        self._rate = rate_bytes_per_s
        self._chunk = chunk_bytes
        self._dropped = 0
        self._seq = first_seq
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.sent_bytes = 0
        self.dropped_bytes = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def feed(self, data: bytes) -> None:
        """Output of the job (the executor's ``on_output``); never waits."""
        self._take(self._decoder.decode(data), len(data))

    def _take(self, text: str, raw_len: int) -> None:
        if not text:
            return
        size = len(text.encode("utf-8"))
        if self._buffered + size > self._max:
            self._dropped += raw_len
            self.dropped_bytes += raw_len
            return
        self._parts.append(text)
        self._buffered += size
        self._wake.set()

    async def close(self, timeout: float = 5.0) -> None:
        """The job ended: send what is buffered (within ``timeout``), then stop."""
        self._take(self._decoder.decode(b"", final=True), 0)
        self._closed = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    def _next_chunk(self) -> str:
        text = "".join(self._parts)
        head, rest = cut_utf8(text, self._chunk)
        self._parts = [rest] if rest else []
        self._buffered -= len(head.encode("utf-8"))
        return head

    async def _run(self) -> None:
        began = time.monotonic()
        while True:
            if not self._parts and not self._dropped:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            chunk = self._next_chunk() if self._parts else ""
            dropped, self._dropped = self._dropped, 0
            if not chunk:
                chunk = "\n"  # only a drop to report: a chunk is never empty
            seq, self._seq = self._seq, self._seq + 1  # a seq is never reused (the consumer keeps the first)
            size = len(chunk.encode("utf-8"))
            for _ in range(SEND_ATTEMPTS):
                try:
                    if await self._send(seq, chunk, dropped):
                        break
                except Exception as exc:
                    log.debug("log chunk not delivered", extra={"error": repr(exc)[:200]})
            else:
                self._dropped += size + dropped
                self.dropped_bytes += size
                continue
            self.sent_bytes += size
            ahead = self.sent_bytes / self._rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)
