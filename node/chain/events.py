"""Log poller: decoded contract events with a confirmation depth and reorg handling.

The poller keeps the hashes of the blocks it has processed (a short window). Before each step it checks that the
last processed block is still canonical; if not, it walks back to the common ancestor, emits ``Reorged(from_block)``
so consumers can roll back what they derived, and re-reads from there. Its cursor is persisted in the node's
database so a restarted node resumes where it stopped, without replaying or skipping logs.

Public endpoints cap ``eth_getLogs``: by block range ("exceed maximum block range: 2000"), by result count ("query
returned more than 10000 results") or by response size. When the endpoint refuses a range for its size, the poller
splits it in two and reads the halves in order, and keeps the span that worked as its range for the next steps
(growing it back by doubling after successes, up to ``max_range``). A single block that is still refused is an
error: it is retried at the next step and counted, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, Web3RPCError

from node.chain.artifacts import abi_type
from node.chain.rpc import ChainHealth, health_of
from node.storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChainEvent:
    """One decoded log. ``args`` holds ABI-decoded values (addresses checksummed, bytes as bytes)."""

    name: str
    address: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int


@dataclass(frozen=True, slots=True)
class Reorged:
    """Blocks from ``from_block`` on were replaced: anything derived from them must be re-derived."""

    from_block: int


class EventDecoder:
    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._events: dict[bytes, dict[str, Any]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") == "event" and not item.get("anonymous"):
                    sig = f"{item['name']}({','.join(abi_type(i) for i in item['inputs'])})"
                    self._events[keccak(sig.encode())] = item

    def topic(self, name: str) -> str:
        for t, item in self._events.items():
            if item["name"] == name:
                return "0x" + t.hex()
        raise KeyError(name)

    def decode(self, raw: dict[str, Any]) -> ChainEvent | None:
        topics = [bytes(t) if not isinstance(t, str) else bytes.fromhex(t.removeprefix("0x")) for t in raw["topics"]]
        if not topics:
            return None
        item = self._events.get(topics[0])
        if item is None:
            return None
        indexed = [i for i in item["inputs"] if i.get("indexed")]
        plain = [i for i in item["inputs"] if not i.get("indexed")]
        args: dict[str, Any] = {}
        for inp, topic in zip(indexed, topics[1:], strict=False):
            t = abi_type(inp)
            if t in ("string", "bytes") or t.endswith("]") or t.startswith("("):
                args[inp["name"]] = topic  # hashed
            else:
                args[inp["name"]] = abi_decode([t], topic)[0]
        data = raw["data"]
        data_b = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
        if plain:
            values = abi_decode([abi_type(i) for i in plain], data_b)
            for inp, v in zip(plain, values, strict=True):
                args[inp["name"]] = v
        for k, v in list(args.items()):
            if isinstance(v, str) and v.startswith("0x") and len(v) == 42:
                args[k] = to_checksum_address(v)
        return ChainEvent(
            name=item["name"],
            address=to_checksum_address(raw["address"]),
            args=args,
            block_number=int(raw["blockNumber"]),
            block_hash=_hex(raw["blockHash"]),
            tx_hash=_hex(raw["transactionHash"]),
            log_index=int(raw["logIndex"]),
        )


def _hex(v: Any) -> str:
    if isinstance(v, str):
        return v if v.startswith("0x") else "0x" + v
    return "0x" + bytes(v).hex()


Handler = Callable[[ChainEvent | Reorged], Awaitable[None]]

# Phrases of the errors public endpoints answer when an eth_getLogs request is too large (range, results, size).
_TOO_LARGE_PHRASES = ("block range", "range is too", "range too", "more than", "too many", "response size",
                      "limit exceeded", "exceed maximum", "query timeout", "limited to", "max results")


SPAN_GROW_AFTER = 8  # full-span reads before the poller tries a range twice as long again


def log_range_too_large(exc: Exception) -> bool:
    """True when an eth_getLogs failure says the request covered too much (so a smaller one may pass)."""
    if not isinstance(exc, Web3RPCError):
        return False
    message = str(exc).lower()
    return any(p in message for p in _TOO_LARGE_PHRASES)


class LogPoller:
    """Polls ``eth_getLogs`` for the given contracts and hands decoded events to ``handler`` in chain order."""

    def __init__(
        self,
        w3: AsyncWeb3,
        db: Database,
        addresses: list[str],
        decoder: EventDecoder,
        handler: Handler,
        start_block: int,
        confirmations: int = 0,
        interval: float = 0.25,
        max_range: int = 2_000,
        cursor_key: str = "log_poller",
    ) -> None:
        self.w3 = w3
        self.db = db
        self.addresses = [to_checksum_address(a) for a in addresses]
        self.decoder = decoder
        self.handler = handler
        self.confirmations = confirmations
        self.interval = interval
        self.max_range = max_range
        self.cursor_key = cursor_key
        saved = db.get_kv(cursor_key)
        self.next_block = int(saved) if saved is not None else start_block
        self._hashes: deque[tuple[int, str]] = deque(maxlen=128)
        self._stop = asyncio.Event()
        self.errors = 0
        self._span_ok = 0
        self.span = max_range  # the range the endpoint last accepted (shrinks on a cap error, grows back)
        self.health: ChainHealth = health_of(w3.provider) or ChainHealth()

    async def _block_hash(self, number: int) -> str:
        block = await self.w3.eth.get_block(number)
        return _hex(block["hash"])

    async def _check_reorg(self) -> None:
        while self._hashes:
            number, known = self._hashes[-1]
            try:
                current = await self._block_hash(number)
            except BlockNotFound:  # the chain is now shorter than our last block: it was replaced
                current = ""
            # any other failure (endpoint down, throttled) propagates: the step is retried, nothing is rolled back
            if current == known:
                return
            self._hashes.pop()
            self.next_block = number

    async def step(self) -> int:
        """Process one range of confirmed blocks; returns the number of events handled."""
        before = self.next_block
        await self._check_reorg()
        if self.next_block < before:
            log.warning("chain reorganised", extra={"from_block": self.next_block})
            await self.handler(Reorged(self.next_block))
        head = int(await self.w3.eth.block_number) - self.confirmations
        if head < self.next_block:
            return 0
        self.health.poller_at(self.next_block, head)
        to_block = min(head, self.next_block + self.span - 1)
        raw_logs = await self._get_logs(self.next_block, to_block)
        events = [e for e in (self.decoder.decode(dict(r)) for r in raw_logs) if e is not None]
        events.sort(key=lambda e: (e.block_number, e.log_index))
        for event in events:
            await self.handler(event)
        self._hashes.append((to_block, await self._block_hash(to_block)))
        self.next_block = to_block + 1
        self.db.set_kv(self.cursor_key, str(self.next_block))
        self.health.poller_at(self.next_block, head)
        return len(events)

    async def _get_logs(self, from_block: int, to_block: int) -> list[Any]:
        """Logs of ``[from_block, to_block]`` in chain order, read in halves while the endpoint says too large."""
        try:
            logs = list(await self.w3.eth.get_logs(
                {"fromBlock": from_block, "toBlock": to_block, "address": self.addresses}))
        except Exception as exc:
            if to_block <= from_block or not log_range_too_large(exc):
                raise
            self.health.split()
            mid = (from_block + to_block) // 2
            self.span, self._span_ok = max(1, mid - from_block + 1), 0
            log.info("log range split", extra={"from_block": from_block, "to_block": to_block,
                                               "error": str(exc)[:200]})
            return [*await self._get_logs(from_block, mid), *await self._get_logs(mid + 1, to_block)]
        if to_block - from_block + 1 >= self.span:
            self._span_ok += 1
            if self._span_ok >= SPAN_GROW_AFTER:
                self.span, self._span_ok = min(self.max_range, self.span * 2), 0
        return logs

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RPC down or a handler bug: keep polling, loudly
                self.errors += 1
                log.warning("log poll failed", extra={"error": repr(exc)[:300]})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    def stop(self) -> None:
        self._stop.set()

