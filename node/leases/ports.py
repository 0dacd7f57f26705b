"""The lease engine's ports: what it needs from the outside world, as ``typing.Protocol`` types.

The engine talks to peers through :class:`PeerTransport`, to the escrow and the token through :class:`EscrowPort`
and :class:`TokenPort`, and reads the chain's clock and decodes logs through :class:`ChainPort`. The node passes the
real parts (the libp2p bridge, ``node.chain.proxies.Escrow``/``Token``, :class:`ClientChain`); unit tests pass
in-memory fakes (``tests/unit/leases/fakes.py``), so every crash point of the engine is testable without anvil or
libp2p.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from node.chain.client import ChainClient
from node.chain.events import ChainEvent
from node.chain.proxies import OnChainLease
from node.chain.tx import TxResult
from node.protocol.checkpoint import Checkpoint
from node.protocol.offers import Offer

#: A lease-stream handler: (peer id, request body) -> reply body (``None``: no reply).
StreamHandler = Callable[[str, bytes], Awaitable[bytes | None]]


class PeerTransport(Protocol):
    def set_handler(self, protocol: str, callback: StreamHandler) -> Awaitable[None] | None:
        """Serve ``protocol``; on a running host, the returned awaitable completes once it is served."""
        ...

    async def request(self, peer: str, protocol: str, data: bytes, timeout: float) -> bytes | None:
        """Send one request and return the reply; raises on failure or timeout."""
        ...


class EscrowPort(Protocol):
    """The ``LeaseEscrow`` calls the engine makes. Every write takes an idempotency key."""

    async def open_lease(self, key: str, offer: Offer, signature: bytes, gpus: int, deposit: int) -> TxResult: ...

    async def open_lease_with_permit(self, key: str, offer: Offer, signature: bytes, gpus: int, deposit: int,
                                     deadline: int, v: int, r: bytes, s: bytes) -> TxResult: ...

    async def top_up(self, key: str, lease_id: int, amount: int) -> TxResult: ...

    async def settle(self, key: str, cp: Checkpoint, signature: bytes) -> TxResult: ...

    async def settle_batch(self, key: str, items: list[tuple[Checkpoint, bytes]]) -> TxResult: ...

    async def close(self, key: str, lease_id: int) -> TxResult: ...

    async def finalize(self, key: str, lease_id: int) -> TxResult: ...

    async def withdraw_earnings(self, key: str) -> TxResult: ...

    async def claim(self, key: str, cp: Checkpoint, signature: bytes) -> TxResult: ...

    async def dispute(self, key: str, cp: Checkpoint, signature: bytes) -> TxResult: ...

    async def finalize_claim(self, key: str, lease_id: int) -> TxResult: ...

    async def challenge_liveness(self, key: str, lease_id: int) -> TxResult: ...

    async def answer_liveness(self, key: str, lease_id: int) -> TxResult: ...

    async def resolve_liveness(self, key: str, lease_id: int) -> TxResult: ...

    async def report_equivocation(self, key: str, a: Checkpoint, sig_a: bytes, b: Checkpoint, sig_b: bytes
                                  ) -> TxResult: ...

    async def get_lease(self, lease_id: int) -> OnChainLease: ...

    async def earnings(self, who: str) -> int: ...


class TokenPort(Protocol):
    async def supports_permit(self) -> bool: ...

    async def sign_permit(self, owner_key: bytes, spender: str, value: int, deadline: int
                          ) -> tuple[int, bytes, bytes]: ...

    async def ensure_allowance(self, key: str, spender: str, amount: int) -> TxResult | None: ...


class ChainPort(Protocol):
    @property
    def address(self) -> str | None:
        """Our wallet address."""
        ...

    async def block_time(self) -> int:
        """Timestamp of the latest block (unix s)."""
        ...

    def decode_log(self, raw: Mapping[str, object]) -> ChainEvent | None: ...


class Clock(Protocol):
    def __call__(self) -> int:
        """Unix milliseconds."""
        ...


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ClientChain:
    """:class:`ChainPort` over the node's ``ChainClient``."""

    def __init__(self, client: ChainClient) -> None:
        self._client = client

    @property
    def address(self) -> str | None:
        return self._client.address

    async def block_time(self) -> int:
        return int((await self._client.w3.eth.get_block("latest"))["timestamp"])

    def decode_log(self, raw: Mapping[str, object]) -> ChainEvent | None:
        return self._client.events.decode(dict(raw))


def lease_opened_in(chain: ChainPort, logs: Sequence[Mapping[str, object]]) -> ChainEvent | None:
    """The ``LeaseOpened`` event among a transaction's logs."""
    return next((e for e in (chain.decode_log(r) for r in logs) if e is not None and e.name == "LeaseOpened"), None)
