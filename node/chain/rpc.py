"""The JSON-RPC transport to the chain, made for public endpoints: retries with backoff, and the endpoint's health.

Public endpoints fail in ordinary ways: they rate-limit (HTTP 429, or a JSON-RPC error saying so), drop
connections, time out, and sometimes go away for minutes. ``ResilientHTTPProvider`` retries a request that failed
in such a way with exponential backoff and jitter (honouring ``Retry-After``) for up to ``retry_for`` seconds, then
raises the last error. Everything else (a revert, a range-cap error on ``eth_getLogs``, a bad request) is returned
at once: the caller decides (the log poller splits its range, the transaction sender decodes the revert).

Resending a request is safe for every method the node uses: reads are idempotent, and ``eth_sendRawTransaction``
of the same signed bytes is answered "already known" (or "nonce too low" once mined), which ``node.chain.tx``
treats as sent.

``ChainHealth`` records what the node saw: the endpoint is *down* from the first request that failed after its
retries (or failed ``DOWN_AFTER`` times in a row) until a request succeeds again. ``/v1/status`` shows
``snapshot()``; the same figures are Prometheus metrics (``gpunet_chain_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge
from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint, RPCResponse

log = logging.getLogger(__name__)

RPC_UP = Gauge("gpunet_chain_rpc_up", "1 while the chain endpoint answers, 0 during an outage.")
RPC_ERRORS = Counter("gpunet_chain_rpc_errors_total", "Failed chain RPC attempts, by reason.", ["reason"])
RPC_RETRIES = Counter("gpunet_chain_rpc_retries_total", "Chain RPC requests resent after a transient failure.")
RPC_OUTAGES = Counter("gpunet_chain_rpc_outages_total", "Chain endpoint outages seen (up -> down transitions).")
LOG_SPLITS = Counter("gpunet_chain_getlogs_splits_total",
                     "eth_getLogs ranges split in two after the endpoint refused their size.")
POLLER_LAG = Gauge("gpunet_chain_log_poller_lag_blocks", "Blocks between the chain head and the log poller.")

DOWN_AFTER = 3  # consecutive failed attempts that make an outage even before the retries give up

# Phrases of the JSON-RPC errors public endpoints answer when they throttle (not when they refuse a request).
_RATE_LIMIT_PHRASES = ("rate limit", "too many requests", "request count exceeded", "capacity exceeded",
                       "throughput exceeded")


@dataclass
class ChainHealth:
    """What this node saw of its chain endpoint. Mutated only from the node's event loop."""

    up: bool = True
    down_since: float | None = None
    last_ok_at: float | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    errors: int = 0
    retries: int = 0
    outages: int = 0
    outage_seconds: float = 0.0  # closed outages only
    log_splits: int = 0
    poller_next_block: int | None = None
    head_block: int | None = None

    def ok(self) -> None:
        now = time.time()
        self.last_ok_at = now
        self.consecutive_failures = 0
        if not self.up:
            self.up = True
            if self.down_since is not None:
                self.outage_seconds += now - self.down_since
                log.warning("chain endpoint back", extra={"down_s": round(now - self.down_since, 2)})
            self.down_since = None
            RPC_UP.set(1)

    def failed(self, reason: str, error: str, gave_up: bool) -> None:
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = f"{reason}: {error}"[:300]
        RPC_ERRORS.labels(reason).inc()
        if self.up and (gave_up or self.consecutive_failures >= DOWN_AFTER):
            self.up = False
            self.down_since = time.time()
            self.outages += 1
            RPC_OUTAGES.inc()
            RPC_UP.set(0)
            log.warning("chain endpoint down", extra={"reason": reason, "error": error[:200]})

    def retried(self) -> None:
        self.retries += 1
        RPC_RETRIES.inc()

    def split(self) -> None:
        self.log_splits += 1
        LOG_SPLITS.inc()

    def poller_at(self, next_block: int, head: int) -> None:
        self.poller_next_block = next_block
        self.head_block = head
        POLLER_LAG.set(max(0, head - next_block + 1))

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        return {
            "rpc": "up" if self.up else "down",
            "down_since": self.down_since,
            "down_for_s": round(now - self.down_since, 1) if self.down_since is not None else 0.0,
            "last_ok_at": self.last_ok_at,
            "last_error": self.last_error,
            "errors": self.errors,
            "retries": self.retries,
            "outages": self.outages,
            "outage_seconds": round(self.outage_seconds + (now - self.down_since if self.down_since else 0.0), 1),
            "getlogs_splits": self.log_splits,
            "log_poller_next_block": self.poller_next_block,
            "head_block": self.head_block,
        }


def transient_reason(exc: BaseException) -> str | None:
    """The failure class of an exception worth a retry, or None if retrying cannot help."""
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 429:
            return "http_429"
        if exc.status >= 500:
            return "http_5xx"
        return None
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "connection"
    return None


def rate_limited(response: RPCResponse) -> bool:
    error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        return False
    message = str(error.get("message", "")).lower()
    return any(p in message for p in _RATE_LIMIT_PHRASES)


class ResilientHTTPProvider(AsyncHTTPProvider):
    """``AsyncHTTPProvider`` that retries transient failures with backoff and keeps a ``ChainHealth``."""

    def __init__(self, endpoint_uri: str, timeout: float = 10.0, retry_for: float = 20.0,
                 backoff_initial: float = 0.1, backoff_max: float = 2.0) -> None:
        # web3's own retry covers a fixed list of methods and exception types: ours replaces it
        super().__init__(endpoint_uri, request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
                         exception_retry_configuration=None)
        # web3 guards its session cache with ONE process-wide threading lock, taken in a worker thread; a request
        # cancelled while that acquire is pending can leave it held, and then every request in the process hangs.
        # A lock of our own confines that to this provider (whose owner is stopping when its requests are cancelled).
        self._request_session_manager._lock = threading.Lock()
        self.health = ChainHealth()
        self.retry_for = retry_for
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        deadline = time.monotonic() + self.retry_for
        delay = self.backoff_initial
        while True:
            wait: float | None = None
            try:
                response = await super().make_request(method, params)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = transient_reason(exc)
                if reason is None:
                    raise
                gave_up = time.monotonic() + delay > deadline
                self.health.failed(reason, f"{type(exc).__name__}: {exc}", gave_up)
                if gave_up:
                    raise
                if isinstance(exc, aiohttp.ClientResponseError) and exc.headers is not None:
                    wait = _retry_after(exc.headers.get("Retry-After"))
            else:
                if not rate_limited(response):
                    self.health.ok()
                    return response
                gave_up = time.monotonic() + delay > deadline
                self.health.failed("rate_limited", str(response.get("error"))[:200], gave_up)
                if gave_up:
                    return response
            self.health.retried()
            pause = min(wait if wait is not None else delay * (0.5 + random.random()), self.backoff_max * 2)
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            delay = min(delay * 2, self.backoff_max)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None


def health_of(provider: object) -> ChainHealth | None:
    """The health record of a provider made by ``make_w3`` (None for any other provider, e.g. in tests)."""
    return provider.health if isinstance(provider, ResilientHTTPProvider) else None
