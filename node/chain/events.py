"""Log poller: decoded contract events with a confirmation depth and reorg handling.

The poller keeps the hashes of the blocks it has processed (a short window). Before each step it checks that the
last processed block is still canonical; if not, it walks back to the common ancestor, emits ``Reorged(from_block)``
so consumers can roll back what they derived, and re-reads from there. Its cursor is persisted in the node's
database so a restarted node resumes where it stopped, without replaying or skipping logs.
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

from node.chain.artifacts import abi_type
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

    async def _block_hash(self, number: int) -> str:
        block = await self.w3.eth.get_block(number)
        return _hex(block["hash"])

    async def _check_reorg(self) -> None:
        while self._hashes:
            number, known = self._hashes[-1]
            try:
                current = await self._block_hash(number)
            except Exception:
                current = ""
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
        to_block = min(head, self.next_block + self.max_range - 1)
        raw_logs = await self.w3.eth.get_logs(
            {"fromBlock": self.next_block, "toBlock": to_block, "address": self.addresses}
        )
        events = [e for e in (self.decoder.decode(dict(r)) for r in raw_logs) if e is not None]
        events.sort(key=lambda e: (e.block_number, e.log_index))
        for event in events:
            await self.handler(event)
        self._hashes.append((to_block, await self._block_hash(to_block)))
        self.next_block = to_block + 1
        self.db.set_kv(self.cursor_key, str(self.next_block))
        return len(events)

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

