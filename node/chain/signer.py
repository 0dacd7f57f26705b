"""One wallet's signing for ``node.chain.tx``: its account, its nonces (one manager per wallet: a nonce is taken
under ``lock`` and the lock is held until the transaction is sent, so concurrent sends never share one) and the
fee level it offers (from the latest block, cached for 10 s)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

FEE_CACHE_S = 10.0


@dataclass(slots=True)
class RpcCount:
    """RPC calls made for one wallet's transactions (counted for the benchmark)."""

    n: int = 0


def tx_fields(address: str, chain_id: int, to: str, data: bytes, value: int) -> dict[str, Any]:
    """The fields every transaction of the wallet carries; an empty ``to`` creates a contract."""
    tx: dict[str, Any] = {"from": address, "data": "0x" + data.hex(), "value": value, "chainId": chain_id}
    if to:
        tx["to"] = to_checksum_address(to)
    return tx


class TxSigner:
    def __init__(self, w3: AsyncWeb3, private_key: bytes, chain_id: int, calls: RpcCount) -> None:
        self.w3 = w3
        self.account: LocalAccount = Account.from_key(private_key)
        self.address = self.account.address
        self.chain_id = chain_id
        self.calls = calls
        self.lock = asyncio.Lock()  # held from taking a nonce until its transaction is sent
        self._nonce: int | None = None
        self._fee_cache: tuple[float, int, int] | None = None

    async def fees(self) -> tuple[int, int]:
        """``(max_fee, tip)``: twice the latest base fee plus a 1 gwei tip (no tip on a chain without base fee)."""
        now = time.monotonic()
        if self._fee_cache is None or now - self._fee_cache[0] > FEE_CACHE_S:
            self.calls.n += 1
            block = await self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            tip = 1_000_000_000 if base else 0
            self._fee_cache = (now, base * 2 + tip, tip)
        return self._fee_cache[1], self._fee_cache[2]

    def forget_fees(self) -> None:
        self._fee_cache = None

    async def next_nonce(self) -> int:
        """Take the next nonce (read from the chain's pending count the first time, and after ``reset_nonce``)."""
        if self._nonce is None:
            self.calls.n += 1
            self._nonce = int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        n = self._nonce
        self._nonce += 1
        return n

    def reset_nonce(self) -> None:
        self._nonce = None

    def sign(self, fields: dict[str, Any], nonce: int, gas: int, max_fee: int, tip: int) -> tuple[str, bytes]:
        """A type-2 transaction of ``fields`` (see ``tx_fields``): its hash and its raw signed bytes."""
        signed = self.account.sign_transaction({
            **fields, "nonce": nonce, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "type": 2,
        })
        return "0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction)
