"""A chain endpoint that behaves like the public ones: a real HTTP hop between the nodes and anvil.

``ChainProxy`` is a small HTTP/1.1 server (raw asyncio, so that it can cut a connection mid-request) that forwards
JSON-RPC requests to anvil, with knobs that can be turned while nodes run:

- ``max_log_range`` / ``max_log_results``: ``eth_getLogs`` over more blocks, or returning more logs, is answered
  with the JSON-RPC errors public providers give (``-32602 "exceed maximum block range: N"``,
  ``-32005 "query returned more than N results"``);
- ``rate`` / ``burst``: a token bucket; a request without a token gets HTTP 429 with ``Retry-After`` and the
  JSON-RPC body a throttling provider sends;
- ``latency``: added before each answer;
- ``drop``: the fraction of requests whose connection is closed without an answer (half before forwarding, half
  after: the request may or may not have reached anvil);
- ``lose_send_answers``: the answers to the next N ``eth_sendRawTransaction`` are cut after anvil took the
  transaction (the sender cannot know it arrived);
- ``go_dark()`` / ``come_back()``: the listener closes and open connections are cut (connection refused), then
  it listens again on the same port.

``stats`` counts what happened (per method, 429s, range errors, drops, refused while dark).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from node.chain.anvil import free_port


@dataclass
class ChainProxy:
    upstream: str
    port: int = 0
    host: str = "127.0.0.1"
    max_log_range: int | None = None
    max_log_results: int | None = None
    rate: float | None = None
    burst: float = 20.0
    latency: float = 0.0
    drop: float = 0.0
    lose_send_answers: int = 0
    seed: int = 1
    stats: Counter[str] = field(default_factory=Counter)
    dark: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._tokens = self.burst
        self._refill_at = time.monotonic()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> ChainProxy:
        if self.port == 0:
            self.port = free_port()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self._listen()
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.dark = False

    async def go_dark(self) -> None:
        """Stop listening and cut every open connection: clients get 'connection refused' until ``come_back``."""
        self.dark = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def come_back(self) -> None:
        await self._listen()

    def calm(self) -> None:
        """Turn every fault off (the caps stay: they are the endpoint's policy, not a fault)."""
        self.rate, self.latency, self.drop = None, 0.0, 0.0

    async def stop(self) -> None:
        await self.go_dark()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------------------ serving
    def _take_token(self) -> bool:
        if self.rate is None:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._refill_at) * self.rate)
        self._refill_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.dark:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = await self._answer(body)
                if status is None:  # dropped
                    writer.transport.abort()
                    return
                extra = "Retry-After: 1\r\n" if status == 429 else ""
                reason = {200: "OK", 429: "Too Many Requests"}.get(status, "Error")
                writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(answer)}\r\n{extra}\r\n".encode() + answer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, body: bytes) -> tuple[int | None, bytes]:
        try:
            request = json.loads(body)
        except ValueError:
            return 400, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
        method = request.get("method", "?") if isinstance(request, dict) else "batch"
        rid = request.get("id") if isinstance(request, dict) else None
        self.stats["requests"] += 1
        self.stats[f"method:{method}"] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if not self._take_token():
            self.stats["http_429"] += 1
            return 429, _error(rid, -32005, "Your app has exceeded its compute units per second capacity: "
                                            "request rate limited")
        drop = self.drop and self._rng.random() < self.drop
        if drop and self._rng.random() < 0.5:
            self.stats["dropped_before"] += 1
            return None, b""
        if method == "eth_getLogs" and self.max_log_range is not None:
            span = await self._log_span(request["params"][0])
            if span is not None and span > self.max_log_range:
                self.stats["getlogs_range_refused"] += 1
                return 200, _error(rid, -32602, f"exceed maximum block range: {self.max_log_range}")
        assert self._session is not None
        async with self._session.post(self.upstream, data=body,
                                      headers={"Content-Type": "application/json"}) as resp:
            upstream = await resp.read()
        if method == "eth_getLogs" and self.max_log_results is not None:
            result = json.loads(upstream).get("result")
            if isinstance(result, list) and len(result) > self.max_log_results:
                self.stats["getlogs_results_refused"] += 1
                return 200, _error(rid, -32005, f"query returned more than {self.max_log_results} results. "
                                                "Try with this block range [0x0, 0x0].")
        if drop:
            self.stats["dropped_after"] += 1
            return None, b""
        if method == "eth_sendRawTransaction":
            self.stats["raw_transactions_forwarded"] += 1
            if self.lose_send_answers > 0:
                self.lose_send_answers -= 1
                self.stats["send_answers_lost"] += 1
                return None, b""
        return 200, upstream

    async def _log_span(self, flt: dict[str, Any]) -> int | None:
        start, end = flt.get("fromBlock"), flt.get("toBlock")
        if not isinstance(start, str) or not isinstance(end, str):
            return None
        if start.startswith("0x") and end.startswith("0x"):
            return int(end, 16) - int(start, 16) + 1
        return None


def _error(rid: Any, code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}).encode()
