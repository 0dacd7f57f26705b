"""Waiting for a sent intent to be mined (step 4 of ``node.chain.tx``): poll for a receipt of any hash the intent
was sent under, rebroadcast the stored signed bytes while none shows, sign it again with a fresh nonce if its nonce
went to another transaction, and bump the fees of one that stays pending.

Only time during which the endpoint answered counts against ``receipt_timeout``; ``max_patience`` bounds one wait in
wall-clock time, outages included. What the receipt means (mined or reverted, and why) is for ``TxSender``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3RPCError

from node.chain.intents import Intent, IntentStore, hashes, replaced
from node.chain.rpc import transient_reason
from node.chain.signer import RpcCount, TxSigner, tx_fields
from node.errors import ChainError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Patience:
    """How one receipt wait paces itself (``TxSender``'s settings of the same names)."""

    receipt_timeout: float  # seconds of answered polling before ``ChainError`` (the intent is kept)
    poll_interval: float
    bump_after: float  # re-sign with higher fees when a transaction is still pending after this
    rebroadcast_every: float  # resend the signed bytes while no receipt (the pool may be gone)
    max_patience: float  # wall-clock bound of one wait, outages included


def pool_answer(exc: Web3RPCError) -> str | None:
    """What an endpoint's refusal of a raw transaction says about it: 'known' (already in the pool or mined),
    'nonce too low' (its nonce is used: mined, or taken by another transaction), or None (refused for cause)."""
    message = str(exc).lower()
    if "already known" in message or "already imported" in message or "known transaction" in message:
        return "known"
    if "nonce too low" in message or "nonce has already been used" in message or "old nonce" in message:
        return "nonce too low"
    return None


class ReceiptWatch:
    """Sees one wallet's sent intents through to a receipt."""

    def __init__(self, w3: AsyncWeb3, intents: IntentStore, signer: TxSigner, calls: RpcCount) -> None:
        self.w3 = w3
        self.intents = intents
        self.signer = signer
        self.calls = calls

    async def wait(self, key: str, kind: str, tx_hash: str, p: Patience) -> tuple[Any, str]:
        """The receipt of whichever transaction sent for intent ``key`` was mined, and its hash (stored as the
        intent's ``tx_hash``). Raises ``ChainError`` when the endpoint failed for cause or stayed unusable."""
        budget = p.receipt_timeout  # seconds of answered polling left
        hard_deadline = time.monotonic() + p.max_patience
        last_send = last_broadcast = time.monotonic()
        receipt = None
        while receipt is None:
            t_round = time.monotonic()
            intent = self.intents.get(key) or {}
            sent_as = [intent.get("tx_hash") or tx_hash, *replaced(intent)]
            answered = True
            try:
                receipt, found = await self.find(sent_as)
                if receipt is not None:
                    tx_hash = found
                    break
                if time.monotonic() - last_broadcast > p.rebroadcast_every and intent.get("raw_tx"):
                    last_broadcast = time.monotonic()
                    if await self._rebroadcast(kind, intent) == "nonce used":
                        receipt, found = await self.find(sent_as)  # mined just now?
                        if receipt is not None:
                            tx_hash = found
                            break
                        tx_hash = await self._resign(key, intent)
                        last_send = time.monotonic()
                        continue
            except Exception as exc:
                if transient_reason(exc) is None:
                    if isinstance(exc, Web3RPCError | aiohttp.ClientError):
                        raise ChainError(f"{kind}: RPC failure while waiting for {tx_hash}: {exc}") from exc
                    raise
                answered = False
            now = time.monotonic()
            if answered:
                budget -= now - t_round + p.poll_interval
            if budget <= 0 or now > hard_deadline:
                raise ChainError(f"{kind}: no receipt for {tx_hash} after {p.receipt_timeout}s of answered "
                                 "polling (intent kept)")
            if answered and now - last_send > p.bump_after and intent.get("sender") == self.signer.address:
                with contextlib.suppress(TimeoutError, OSError, aiohttp.ClientError):
                    await self._bump(key, intent)
                last_send = time.monotonic()
            await asyncio.sleep(p.poll_interval if answered else min(1.0, p.rebroadcast_every))
        if tx_hash != (self.intents.get(key) or {}).get("tx_hash"):
            self.intents.update(key, tx_hash=tx_hash)  # an earlier fee level (or nonce) was the one mined
        return receipt, tx_hash

    async def find(self, sent_as: list[str]) -> tuple[Any, str]:
        """The first receipt found among ``sent_as`` and its hash, or ``(None, "")``."""
        for h in sent_as:
            try:
                self.calls.n += 1
                return await self.w3.eth.get_transaction_receipt(h), h  # type: ignore[arg-type]
            except TransactionNotFound:
                continue
        return None, ""

    async def _rebroadcast(self, kind: str, intent: Intent) -> str:
        """Send the stored signed bytes again: 'sent', 'known' (in the pool or mined) or 'nonce used'."""
        try:
            self.calls.n += 1
            await self.w3.eth.send_raw_transaction(bytes(intent["raw_tx"]))
            log.info("transaction rebroadcast", extra={"kind": kind, "nonce": intent.get("nonce")})
            return "sent"
        except Web3RPCError as exc:
            answer = pool_answer(exc)
            if answer == "nonce too low":
                return "nonce used"
            if answer is None:
                log.warning("rebroadcast refused", extra={"kind": kind, "error": str(exc)[:200]})
            return "known"

    def _fields(self, intent: Intent) -> dict[str, Any]:
        return tx_fields(self.signer.address, self.signer.chain_id, intent["to_addr"], bytes(intent["data"]),
                         int(intent["value"]))

    async def _resign(self, key: str, intent: Intent) -> str:
        """The intent's nonce went to another transaction and none of its hashes was mined: sign it again with a
        fresh nonce. The old hashes stay in ``replaced`` (they can never be mined now)."""
        async with self.signer.lock:
            self.signer.reset_nonce()
            nonce = await self.signer.next_nonce()
            new_hash, raw = self.signer.sign(self._fields(intent), nonce, int(intent["gas"]), int(intent["max_fee"]),
                                             int(intent["tip"] or 0))
            self.intents.update(key, tx_hash=new_hash, raw_tx=raw, nonce=nonce, replaced=",".join(hashes(intent)))
            log.warning("transaction signed again with a fresh nonce",
                        extra={"kind": intent["kind"], "old_nonce": intent.get("nonce"), "nonce": nonce})
            with contextlib.suppress(Web3RPCError):
                self.calls.n += 1
                await self.w3.eth.send_raw_transaction(raw)
        return new_hash

    async def _bump(self, key: str, intent: Intent) -> None:
        """Replace a pending transaction (same nonce) with one paying 25% more, so payments never stall on fees."""
        if intent.get("nonce") is None or intent.get("gas") is None or intent.get("max_fee") is None:
            return
        self.signer.forget_fees()
        max_fee, tip = await self.signer.fees()
        tip = max(tip, int(intent["tip"] or 0) * 5 // 4 + 1)
        max_fee = max(max_fee, int(intent["max_fee"]) * 5 // 4 + 1, tip)
        new_hash, raw = self.signer.sign(self._fields(intent), int(intent["nonce"]), int(intent["gas"]), max_fee, tip)
        self.intents.update(key, tx_hash=new_hash, raw_tx=raw, max_fee=max_fee, tip=tip,
                            replaced=",".join(hashes(intent)))
        try:
            self.calls.n += 1
            await self.w3.eth.send_raw_transaction(raw)
            log.info("transaction fee bumped", extra={"kind": intent["kind"], "nonce": intent["nonce"],
                                                      "max_fee": max_fee})
        except (Web3RPCError, OSError, TimeoutError) as exc:  # e.g. the original was just mined
            log.info("fee bump not accepted", extra={"kind": intent["kind"], "error": str(exc)[:200]})
